#include "server/core/demo_corpus.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace adapterd::core {
namespace {

enum class Line { kBlank, kSkipped, kHeading, kText };

// Classifies the lines of a markdown document one after the other (fences
// open and close code blocks).
class LineReader {
 public:
  Line Next(absl::string_view line) {
    const absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(trimmed, "```")) {
      in_code_ = !in_code_;
      return Line::kSkipped;
    }
    if (in_code_ || absl::StartsWith(trimmed, "|")) return Line::kSkipped;
    if (trimmed.empty()) return Line::kBlank;
    return absl::StartsWith(line, "#") ? Line::kHeading : Line::kText;
  }

 private:
  bool in_code_ = false;
};

std::vector<absl::string_view> Lines(std::string_view text) {
  return absl::StrSplit(absl::string_view(text.data(), text.size()), '\n');
}

// Whether a line starts a paragraph of sentences (not a list item, a quote
// or markup).
bool StartsProse(absl::string_view line) {
  return !line.empty() && (absl::ascii_isalnum(line[0]) || line[0] == '`' || line[0] == '*');
}

}  // namespace

const DemoDocument* FindDemoDocument(std::string_view path) {
  for (const DemoDocument& d : DemoDocuments()) {
    if (d.path == path) return &d;
  }
  return nullptr;
}

std::vector<std::string> ProseParagraphs(std::string_view markdown) {
  std::vector<std::string> out;
  std::string paragraph;
  LineReader reader;
  for (absl::string_view line : Lines(markdown)) {
    const Line kind = reader.Next(line);
    if (kind == Line::kBlank || kind == Line::kSkipped) {
      if (!paragraph.empty()) out.push_back(std::move(paragraph));
      paragraph.clear();
      continue;
    }
    absl::StrAppend(&paragraph, paragraph.empty() ? "" : "\n", absl::StripTrailingAsciiWhitespace(line));
  }
  if (!paragraph.empty()) out.push_back(std::move(paragraph));
  return out;
}

std::vector<ChatPrompt> SectionExchanges(std::string_view markdown, size_t max_answer_bytes) {
  std::vector<ChatPrompt> out;
  std::string title, answer;
  bool answered = true;  // nothing to answer before the first heading
  auto finish = [&] {
    if (answer.size() > max_answer_bytes) {
      const size_t end = answer.rfind(". ", max_answer_bytes);
      answer.resize(end == std::string::npos ? 0 : end + 1);
    }
    if (!title.empty() && !answer.empty()) out.push_back(ChatPrompt{{{"user", title}, {"assistant", answer}}, false});
    answer.clear();
  };
  LineReader reader;
  bool paragraph_start = true;
  for (absl::string_view line : Lines(markdown)) {
    const Line kind = reader.Next(line);
    const bool starts = paragraph_start;
    paragraph_start = kind != Line::kText;
    if (kind == Line::kHeading) {
      finish();
      const size_t space = line.find(' ');
      title = std::string(absl::StripAsciiWhitespace(space == line.npos ? "" : line.substr(space + 1)));
      title.erase(std::remove(title.begin(), title.end(), '`'), title.end());
      answered = false;
    } else if (answered) {
      continue;
    } else if (kind != Line::kText) {
      answered = !answer.empty();
    } else if (!answer.empty()) {
      absl::StrAppend(&answer, " ", absl::StripAsciiWhitespace(line));
    } else if (starts && StartsProse(absl::StripAsciiWhitespace(line))) {
      answer = std::string(absl::StripAsciiWhitespace(line));
    }
  }
  finish();
  return out;
}

}  // namespace adapterd::core
