// The trained demo through the real server, as a developer meets it: the
// default schedule, trained at the server's first start into a cache that
// the tests in this file share (tests/CMakeLists.txt empties it before a
// run, so the first test to start a server trains it and the others, also
// in parallel, wait for it and reuse it). adapterctl generate and chat,
// gRPC and HTTP chat requests, and adapterctl chat in a terminal (tmux).
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/core/demo_corpus.h"
#include "tests/support/clients.h"
#include "tests/support/http_client.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

using nlohmann::json;
using testing::RunCommand;
using testing::ServerProcess;

// Training at first start takes about a minute on two idle cores; this
// leaves room for a loaded machine.
constexpr absl::Duration kFirstStart = absl::Seconds(400);

std::vector<std::string> Words(const std::string& text) {
  static const std::regex word("[A-Za-z]{3,}");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), word); it != std::sregex_iterator(); ++it) {
    out.push_back(absl::AsciiStrToLower(it->str()));
  }
  return out;
}

// The words of the text the demo learns.
const std::set<std::string>& DocumentationWords() {
  static const auto* words = [] {
    auto* out = new std::set<std::string>();
    for (const core::DemoDocument& d : core::DemoDocuments()) {
      for (const std::string& p : core::ProseParagraphs(d.text)) {
        for (std::string& w : Words(p)) out->insert(std::move(w));
      }
    }
    return out;
  }();
  return *words;
}

// Expects `text` to be made of the documentation's words: at least three,
// and most of those it has.
void ExpectDocumentationWords(const std::string& text, const std::string& what) {
  const std::vector<std::string> words = Words(text);
  std::vector<std::string> known, unknown;
  for (const std::string& w : words) (DocumentationWords().contains(w) ? known : unknown).push_back(w);
  EXPECT_GE(known.size(), 3u) << what << ": " << text;
  EXPECT_GE(known.size(), unknown.size() * 3) << what << ": " << text << "\nunknown: " << absl::StrJoin(unknown, " ");
}

class TrainedDemoIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto s = ServerProcess::Start(
        {"--cache_dir=" + testing::BinaryDir() + "/tests/trained-demo-cache", "--demo_trained=true"}, kFirstStart);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << "the server did not start"; }

  // adapterctl's output for `args`, bounded in time.
  static std::string Ctl(const std::string& args) {
    absl::StatusOr<std::string> out = RunCommand(absl::StrCat("timeout 120 ", testing::BinaryDir(),
                                                              "/server/adapterctl --addr=", server_->grpc_address(),
                                                              " ", args));
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : "";
  }

  static ServerProcess* server_;
};

ServerProcess* TrainedDemoIntegrationTest::server_ = nullptr;

TEST_F(TrainedDemoIntegrationTest, GenerateContinuesWithTheDocumentationsWordsAndAdaptersChangeIt) {
  std::vector<std::string> texts;
  for (const char* adapter : {"", "demo-qv-r4", "demo-all-r8"}) {
    // Past the end of a paragraph the model starts another one: 32 tokens
    // whatever the documentation's prose makes it say first.
    const std::string out = Ctl(absl::StrCat("generate --text='The adapter' --max_new_tokens=32 --ignore_eos",
                                             *adapter ? " --adapter=" : "", adapter));
    // The streamed text, then one line with the finish.
    const size_t finish = out.rfind("finish=");
    ASSERT_NE(finish, std::string::npos) << out;
    texts.push_back(out.substr(0, finish));
    ExpectDocumentationWords(texts.back(), absl::StrCat("adapter '", adapter, "'"));
  }
  EXPECT_NE(texts[0], texts[1]);
  EXPECT_NE(texts[0], texts[2]);
  EXPECT_NE(texts[1], texts[2]);
}

TEST_F(TrainedDemoIntegrationTest, ChatRequestsRunThroughTheShippedTemplate) {
  auto stub = v1::Inference::NewStub(testing::Connect(server_->grpc_address()));
  v1::GenerateRequest req;
  auto* m = req.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Threat model");
  req.mutable_chat()->set_add_generation_prompt(true);
  req.mutable_sampling()->set_max_new_tokens(48);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::GenerateResponse resp;
  grpc::Status st = stub->Generate(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ExpectDocumentationWords(resp.text(), "gRPC chat");
  // <|begin_of_text|><|start_turn|>user\nThreat model<|end_turn|>\n<|start_turn|>assistant\n
  EXPECT_GE(resp.usage().prompt_tokens(), 8u);

  // The same conversation over HTTP, greedy as well, gets the same reply.
  const json body = {{"model", "adapterd-demo"},
                     {"messages", {{{"role", "user"}, {"content", "Threat model"}}}},
                     {"max_tokens", 48},
                     {"temperature", 0}};
  absl::StatusOr<testing::HttpReply> r =
      testing::HttpCall(server_->http_address(), "POST", "/v1/chat/completions", body.dump());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, 200) << r->body;
  const json reply = json::parse(r->body);
  EXPECT_EQ(reply["model"], "adapterd-demo");
  EXPECT_EQ(reply["choices"][0]["message"]["content"], resp.text());

  // A role the template refuses: its own message.
  v1::GenerateRequest tool = req;
  tool.mutable_chat()->mutable_messages(0)->set_role("tool");
  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  st = stub->Generate(&ctx2, tool, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("system, user and assistant, not tool"));
}

// A tmux server of its own on a private socket, killed with the object.
class Tmux {
 public:
  explicit Tmux(const std::string& dir) : socket_(dir + "/tmux.sock") {}
  ~Tmux() { (void)RunCommand(absl::StrCat("timeout 10 tmux -S ", socket_, " kill-server")); }
  absl::StatusOr<std::string> operator()(const std::string& args) const {
    return RunCommand(absl::StrCat("timeout 10 tmux -S ", socket_, " ", args));
  }

 private:
  std::string socket_;
};

enum class ReadEnd { kDone, kClosed, kTimedOut, kFailed };

// Reads what arrives on `fd` into `text` until `done(text)` holds, the
// writer goes away or `deadline` passes.
ReadEnd ReadUntil(int fd, std::string& text, const std::function<bool(const std::string&)>& done,
                  absl::Time deadline) {
  while (!done(text)) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    pollfd p{fd, POLLIN, 0};
    if (ms <= 0 || poll(&p, 1, static_cast<int>(ms)) == 0) return ReadEnd::kTimedOut;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) return ReadEnd::kClosed;
    if (n > 0) text.append(buf, static_cast<size_t>(n));
    if (n < 0 && errno != EAGAIN && errno != EINTR) return ReadEnd::kFailed;
  }
  return ReadEnd::kDone;
}

TEST_F(TrainedDemoIntegrationTest, AdapterctlChatStreamsAReplyInATerminal) {
  const std::string dir = testing::MakeTempDir("tmux-chat");
  const std::string fifo = dir + "/pane";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const int fd = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const absl::Cleanup close_fd = [fd] { close(fd); };
  Tmux tmux(dir);
  // The shell waits for a line before it starts adapterctl, so that the pipe
  // is there before adapterctl writes anything.
  ASSERT_TRUE(tmux(absl::StrCat("new-session -d -s chat -x 160 -y 40 'read go && exec ", testing::BinaryDir(),
                                "/server/adapterctl chat --max_new_tokens=48 --addr=", server_->grpc_address(), "'"))
                  .ok());
  // Everything the pane shows from here on comes through the FIFO.
  ASSERT_TRUE(tmux(absl::StrCat("pipe-pane -O -t chat 'cat >> ", fifo, "'")).ok());
  ASSERT_TRUE(tmux("send-keys -t chat -l go").ok());
  ASSERT_TRUE(tmux("send-keys -t chat Enter").ok());
  std::string seen;
  auto prompted = [](const std::string& t) { return t.ends_with("> "); };
  ASSERT_EQ(ReadUntil(fd, seen, prompted, absl::Now() + absl::Seconds(30)), ReadEnd::kDone)
      << "adapterctl chat did not prompt within 30 s; the terminal shows:\n" << seen;

  // The terminal echoes the line; the reply streams in; the next prompt ends it.
  ASSERT_TRUE(tmux("send-keys -t chat -l 'Threat model'").ok());
  ASSERT_TRUE(tmux("send-keys -t chat Enter").ok());
  const std::string typed = "> Threat model\r\n";
  auto replied = [&](const std::string& t) {
    const size_t at = t.find(typed);
    return at != std::string::npos && t.size() > at + typed.size() + 4 && t.ends_with("\r\n> ");
  };
  ASSERT_EQ(ReadUntil(fd, seen, replied, absl::Now() + absl::Seconds(60)), ReadEnd::kDone)
      << "no reply in the terminal within 60 s; it shows:\n" << seen;
  const size_t start = seen.find(typed) + typed.size();
  const std::string reply = seen.substr(start, seen.size() - start - 4);
  ExpectDocumentationWords(reply, "adapterctl chat");

  // /exit ends adapterctl; the pane, the session and the pipe close with it.
  ASSERT_TRUE(tmux("send-keys -t chat -l /exit").ok());
  ASSERT_TRUE(tmux("send-keys -t chat Enter").ok());
  EXPECT_EQ(ReadUntil(fd, seen, [](const std::string&) { return false; }, absl::Now() + absl::Seconds(30)),
            ReadEnd::kClosed);
  EXPECT_FALSE(tmux("has-session -t chat").ok());
}

}  // namespace
}  // namespace adapterd
