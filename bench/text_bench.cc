// Single-thread throughput of the text layer, for bench/text.py: encode
// MB/s over a corpus (documents separated by NUL bytes), median of --runs
// after one warm-up, and IncrementalDecoder cost per token. Prints one JSON
// object.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "nlohmann/json.hpp"
#include "server/text/incremental_decoder.h"
#include "server/text/tokenizer.h"

ABSL_FLAG(std::string, tokenizer, "", "directory with tokenizer.json or tokenizer.model");
ABSL_FLAG(std::string, corpus, "", "documents separated by NUL bytes");
ABSL_FLAG(int, runs, 5, "timed runs (after one warm-up)");

namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto tokenizer = adapterd::text::Tokenizer::Load(absl::GetFlag(FLAGS_tokenizer));
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  std::ifstream in(absl::GetFlag(FLAGS_corpus), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  std::vector<std::string> docs;
  for (size_t pos = 0; pos < all.size();) {
    size_t end = all.find('\0', pos);
    if (end == std::string::npos) end = all.size();
    docs.push_back(all.substr(pos, end - pos));
    pos = end + 1;
  }
  std::vector<std::vector<int32_t>> ids(docs.size());
  std::vector<double> mbps;
  int64_t tokens = 0;
  for (int run = 0; run <= absl::GetFlag(FLAGS_runs); ++run) {
    const auto start = Clock::now();
    for (size_t i = 0; i < docs.size(); ++i) {
      auto r = (*tokenizer)->Encode(docs[i], false);
      if (!r.ok()) {
        std::cerr << r.status() << "\n";
        return 1;
      }
      ids[i] = *std::move(r);
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (run > 0) mbps.push_back(static_cast<double>(all.size()) / secs / 1e6);
  }
  for (const auto& v : ids) tokens += static_cast<int64_t>(v.size());
  std::vector<double> us_per_token;
  size_t checksum = 0;
  for (int run = 0; run <= absl::GetFlag(FLAGS_runs); ++run) {
    const auto start = Clock::now();
    for (const auto& v : ids) {
      adapterd::text::IncrementalDecoder dec(**tokenizer, /*skip_special_tokens=*/false);
      for (int32_t id : v) checksum += dec.Push(id).size();
      checksum += dec.Finish().size();
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (run > 0) us_per_token.push_back(secs * 1e6 / static_cast<double>(std::max<int64_t>(tokens, 1)));
  }
  nlohmann::json out = {{"bytes", all.size()},          {"documents", docs.size()},
                        {"tokens", tokens},             {"encode_mb_s", mbps},
                        {"encode_mb_s_median", Median(mbps)}, {"decode_us_per_token", us_per_token},
                        {"decode_us_per_token_median", Median(us_per_token)}, {"decoded_bytes", checksum},
                        {"ids", ids}};
  std::cout << out.dump() << "\n";
  return 0;
}
