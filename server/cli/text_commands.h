// adapterctl's inference commands: generate, chat, classify, tokenize,
// detokenize.
#ifndef ADAPTERD_SERVER_CLI_TEXT_COMMANDS_H_
#define ADAPTERD_SERVER_CLI_TEXT_COMMANDS_H_

#include <grpcpp/grpcpp.h>

#include <istream>
#include <memory>
#include <ostream>

namespace adapterd::cli {

// generate: --prompt (token ids) or --text; streams the reply (token ids for
// an id prompt unless --print_text, text otherwise), or with --unary prints
// it whole. Returns the process exit code.
int GenerateCommand(const std::shared_ptr<grpc::Channel>& channel);
// chat: an interactive conversation that keeps its history. Reads one user
// message per line from `in` (a line of /exit, or the end of input, ends
// it), streams each reply to `out` as it is generated, and sends the whole
// conversation, with --system first when given, through the checkpoint's
// chat template every turn.
int ChatCommand(const std::shared_ptr<grpc::Channel>& channel, std::istream& in, std::ostream& out);
// classify: --adapter (a SEQ_CLS adapter) and --prompt ids or --text;
// prints each label with its probability and logit.
int ClassifyCommand(const std::shared_ptr<grpc::Channel>& channel);
// tokenize: --text (or --chat_text as one user message); prints the ids.
int TokenizeCommand(const std::shared_ptr<grpc::Channel>& channel);
// detokenize: --prompt ids; prints the text.
int DetokenizeCommand(const std::shared_ptr<grpc::Channel>& channel);

}  // namespace adapterd::cli

#endif  // ADAPTERD_SERVER_CLI_TEXT_COMMANDS_H_
