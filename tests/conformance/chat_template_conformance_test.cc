// Conformance of chat templates, computed live: transformers'
// apply_chat_template (jinja2 inside it) renders every template in
// tests/conformance/chat_templates/ for every conversation there, with and
// without the generation prompt, and adapterd's RenderChat must produce the
// same text byte for byte. Where transformers raises, adapterd must fail too:
// with exactly the template's message for raise_exception, and with jinja2's
// wording for the other errors. A second test renders thousands of random
// templates (expressions, filters, tests, methods, loops, whitespace layouts)
// with the jinja2 environment transformers builds and compares likewise.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/template/chat_template.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Where two texts first differ, with some context, for failure messages.
std::string FirstDifference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const size_t from = i > 40 ? i - 40 : 0;
  return absl::StrCat("first difference at byte ", i, "\n  transformers: ", json(want.substr(from, 100)).dump(),
                      "\n  adapterd:     ", json(got.substr(from, 100)).dump());
}

// Every template with every conversation, generation prompt off and on.
json BuildCases(const std::string& dir, std::vector<std::string>* templates) {
  const json conversations = json::parse(ReadFile(dir + "/conversations.json"))["conversations"];
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".jinja") templates->push_back(entry.path().filename().string());
  }
  std::sort(templates->begin(), templates->end());
  json cases = json::array();
  for (const std::string& t : *templates) {
    for (const json& c : conversations) {
      for (bool agp : {false, true}) {
        json one = {{"name", absl::StrCat(t, "/", c["name"].get<std::string>(), "/", agp ? "gen" : "nogen")},
                    {"template", t},
                    {"messages", c["messages"]},
                    {"add_generation_prompt", agp},
                    {"bos_token", c.value("bos_token", "<s>")},
                    {"eos_token", c.value("eos_token", "</s>")}};
        if (c.contains("tools")) one["tools"] = c["tools"];
        cases.push_back(std::move(one));
      }
    }
  }
  return cases;
}

TEST(ChatTemplateConformanceTest, MatchesTransformersByteForByte) {
  ADAPTERD_REQUIRE_REFERENCE();
  const std::string dir = testing::SourceDir() + "/tests/conformance/chat_templates";
  std::vector<std::string> templates;
  const json cases = BuildCases(dir, &templates);
  ASSERT_GE(templates.size(), 7u);

  const std::string tmp = testing::MakeTempDir("chat-templates");
  std::ofstream(tmp + "/cases.json") << json{{"cases", cases}}.dump();
  absl::StatusOr<std::string> py = testing::ReferencePython();
  ASSERT_TRUE(py.ok()) << py.status();
  absl::StatusOr<std::string> ran = testing::RunCommand(
      absl::StrCat(*py, " ", testing::SourceDir(), "/tests/conformance/template_reference.py cases --cases ", tmp,
                   "/cases.json --templates-dir ", dir, " --out ", tmp, "/reference.json"));
  ASSERT_TRUE(ran.ok()) << ran.status();
  const json reference = json::parse(ReadFile(tmp + "/reference.json"));
  ASSERT_EQ(reference.size(), cases.size());

  std::map<std::string, tmpl::ChatTemplate> parsed;
  for (const std::string& t : templates) {
    absl::StatusOr<tmpl::ChatTemplate> p = tmpl::ChatTemplate::Parse(ReadFile(dir + "/" + t));
    ASSERT_TRUE(p.ok()) << t << ": " << p.status();
    parsed.emplace(t, *std::move(p));
  }
  std::map<std::string, int> rendered_per_template;
  int raised = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    const json& want = reference[i];
    const std::string name = c["name"];
    ASSERT_EQ(want["name"], name);
    const json* tools = c.contains("tools") ? &c["tools"] : nullptr;
    absl::StatusOr<std::string> got =
        tmpl::RenderChat(parsed.at(c["template"]), c["messages"], c["add_generation_prompt"],
                         c["bos_token"], c["eos_token"], tools);
    if (want.contains("output")) {
      const std::string text = want["output"];
      if (!got.ok()) {
        ADD_FAILURE() << name << ": transformers rendered it, adapterd failed: " << got.status();
        continue;
      }
      EXPECT_TRUE(*got == text) << name << ": " << FirstDifference(text, *got);
      ++rendered_per_template[c["template"]];
      continue;
    }
    ++raised;
    const std::string type = want["error_type"], message = want["error"];
    if (got.ok()) {
      ADD_FAILURE() << name << ": transformers raised " << type << " (" << message << "), adapterd rendered";
      continue;
    }
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << name;
    if (type == "TemplateError") {  // the template's raise_exception
      EXPECT_EQ(got.status().message(), message) << name;
    } else {
      EXPECT_NE(std::string(got.status().message()).find(message), std::string::npos)
          << name << ": transformers raised " << type << ": " << message << "; adapterd: " << got.status();
    }
  }
  int rendered = 0;
  for (const auto& [t, n] : rendered_per_template) rendered += n;
  std::cerr << "chat templates: " << templates.size() << " templates, " << cases.size() << " cases: " << rendered
            << " outputs compared byte for byte, " << raised << " errors compared\n";
  for (const std::string& t : templates) {
    EXPECT_GE(rendered_per_template[t], 4) << t << " rendered too few conversations to mean anything";
  }
  EXPECT_GE(raised, 8) << "the error cases did not run";
}

TEST(ChatTemplateConformanceTest, RandomTemplatesMatchJinja) {
  ADAPTERD_REQUIRE_REFERENCE();
  constexpr int kCount = 4000;
  const std::string tmp = testing::MakeTempDir("random-templates");
  absl::StatusOr<std::string> py = testing::ReferencePython();
  ASSERT_TRUE(py.ok()) << py.status();
  absl::StatusOr<std::string> ran = testing::RunCommand(
      absl::StrCat(*py, " ", testing::SourceDir(), "/tests/conformance/template_reference.py random --count ",
                   kCount, " --seed 1234 --out ", tmp, "/random.json"));
  ASSERT_TRUE(ran.ok()) << ran.status();
  const json doc = json::parse(ReadFile(tmp + "/random.json"));
  ASSERT_EQ(doc["cases"].size(), static_cast<size_t>(kCount));
  // Python prints a generator with its address; adapterd prints a fixed one.
  const std::regex address("at 0x[0-9a-f]+", std::regex::icase);
  int rendered = 0, raised = 0, failures = 0;
  for (const json& c : doc["cases"]) {
    const std::string source = c["source"];
    absl::StatusOr<tmpl::ChatTemplate> t = tmpl::ChatTemplate::Parse(source);
    absl::StatusOr<std::string> got = t.ok() ? t->Render(doc["context"]) : t.status();
    if (c.contains("output")) {
      ++rendered;
      const std::string want = c["output"];
      if (!got.ok()) {
        ADD_FAILURE() << json(source).dump() << ": jinja2 rendered " << json(want).dump()
                      << ", adapterd failed: " << got.status();
      } else if (std::regex_replace(*got, address, "") != std::regex_replace(want, address, "")) {
        ADD_FAILURE() << json(source).dump() << ": " << FirstDifference(want, *got);
      } else {
        continue;
      }
    } else {
      ++raised;
      if (!got.ok()) continue;
      ADD_FAILURE() << json(source).dump() << ": jinja2 raised " << c["error_type"].get<std::string>() << " ("
                    << c["error"].get<std::string>() << "), adapterd rendered " << json(*got).dump();
    }
    if (++failures >= 20) break;
  }
  std::cerr << "random templates: " << rendered << " rendered, " << raised << " raised by jinja2\n";
  EXPECT_GE(rendered, kCount / 3);
  EXPECT_GE(raised, kCount / 10);
}

}  // namespace
}  // namespace adapterd
