#include "server/http/classification.h"

#include <utility>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/http/http_error.h"

namespace adapterd::http {

// The core's sink for one input; forwards to the Classification, which it
// keeps alive until the engine has finished with the input.
class Classification::InputSink final : public core::ClassifySink {
 public:
  InputSink(std::shared_ptr<Classification> c, size_t index) : c_(std::move(c)), index_(index) {}
  void OnResult(absl::StatusOr<core::ClassifyResult> result) override { c_->OnResult(index_, std::move(result)); }

 private:
  const std::shared_ptr<Classification> c_;
  const size_t index_;
};

namespace {

constexpr const char* kRoute = "classify";

nlohmann::json ResultJson(size_t index, const core::ClassifyResult& r) {
  nlohmann::json probs = nlohmann::json::array(), logits = nlohmann::json::array(),
                 labels = nlohmann::json::array();
  size_t top = 0;
  for (size_t i = 0; i < r.scores.size(); ++i) {
    probs.push_back(r.scores[i].probability);
    logits.push_back(r.scores[i].logit);
    labels.push_back(r.scores[i].label);
    if (r.scores[i].logit > r.scores[top].logit) top = i;
  }
  return {{"index", index},
          {"label", r.scores.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.scores[top].label)},
          {"probs", std::move(probs)},
          {"num_classes", r.scores.size()},
          {"logits", std::move(logits)},
          {"labels", std::move(labels)}};
}

}  // namespace

std::string ClassifyResponseJson(const ClassificationContext& ctx, const std::vector<core::ClassifyResult>& results) {
  nlohmann::json data = nlohmann::json::array();
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    data.push_back(ResultJson(i, results[i]));
    prompt_tokens += results[i].prompt_tokens;
  }
  const nlohmann::json body = {
      {"id", absl::StrCat("classify-", ctx.request_id)},
      {"object", "list"},
      {"created", ctx.created},
      {"model", ctx.model},
      {"data", std::move(data)},
      {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}, {"completion_tokens", 0}}}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Classification::Classification(ClassificationContext context, ClassifyApiRequest request,
                               std::shared_ptr<HttpExchange> exchange)
    : ctx_(std::move(context)),
      request_(std::move(request)),
      exchange_(std::move(exchange)),
      num_inputs_(request_.inputs.size()),
      handles_(num_inputs_),
      results_(num_inputs_, absl::UnknownError("no result")) {}

void Classification::Run(ClassificationContext context, ClassifyApiRequest request,
                         std::shared_ptr<HttpExchange> exchange) {
  auto c = std::make_shared<Classification>(std::move(context), std::move(request), exchange);
  exchange->OnAbandoned([w = std::weak_ptr<Classification>(c)] {
    if (std::shared_ptr<Classification> c = w.lock()) c->CancelAll();
  });
  if (absl::Status st = c->Submit(); !st.ok()) {
    {
      absl::MutexLock lock(&c->mu_);
      c->answered_ = true;
    }
    c->CancelAll();
    c->Reply(ErrorResponse(st));
  }
}

absl::Status Classification::Submit() {
  for (size_t i = 0; i < num_inputs_; ++i) {
    core::ClassifyRequest r = std::move(request_.inputs[i]);
    r.id = num_inputs_ == 1 ? ctx_.request_id : absl::StrCat(ctx_.request_id, "-", i);
    absl::StatusOr<std::shared_ptr<engine::RequestHandle>> h =
        ctx_.core->Classify(ctx_.adapter_id, std::move(r), std::make_shared<InputSink>(shared_from_this(), i));
    if (!h.ok()) {
      if (h.status().code() == absl::StatusCode::kNotFound) {
        return WithParam(absl::NotFoundError(absl::StrCat("The model '", ctx_.model, "' does not exist (",
                                                          h.status().message(), ")")),
                         "model");
      }
      // A malformed prompt is about the input; the rest (an adapter that
      // does not classify, no tokenizer for text) say what they are about.
      if (h.status().code() != absl::StatusCode::kInvalidArgument) return h.status();
      return WithParam(h.status(), num_inputs_ == 1 ? std::string("input") : absl::StrCat("input[", i, "]"));
    }
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      handles_[i] = *h;
      cancel = cancelled_;
    }
    if (cancel) (*h)->Cancel();
  }
  return absl::OkStatus();
}

void Classification::OnResult(size_t index, absl::StatusOr<core::ClassifyResult> result) {
  bool all = false;
  {
    absl::MutexLock lock(&mu_);
    results_[index] = std::move(result);
    all = ++finished_ == num_inputs_ && !answered_;
  }
  // Formatting belongs on the I/O thread, not on the engine thread that calls here.
  if (all) exchange_->Post([self = shared_from_this()] { self->RespondWhole(); });
}

void Classification::CancelAll() {
  std::vector<std::shared_ptr<engine::RequestHandle>> handles;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    for (const auto& h : handles_) {
      if (h != nullptr) handles.push_back(h);
    }
  }
  for (const auto& h : handles) h->Cancel();
}

void Classification::RespondWhole() {
  std::vector<core::ClassifyResult> results;
  absl::Status error;
  {
    absl::MutexLock lock(&mu_);
    for (absl::StatusOr<core::ClassifyResult>& r : results_) {
      if (!r.ok()) {
        error = r.status();
        break;
      }
      results.push_back(*std::move(r));
    }
  }
  if (!error.ok()) {
    LOG(INFO) << "request " << ctx_.request_id << " classify failed: " << error;
    return Reply(ErrorResponse(error));
  }
  HttpResponse r;
  r.body = ClassifyResponseJson(ctx_, results);
  Reply(std::move(r));
}

void Classification::Reply(HttpResponse response) const {
  response.headers.emplace_back("x-request-id", ctx_.request_id);
  if (ctx_.metrics != nullptr) ctx_.metrics->RecordRequest(kRoute, response.status);
  exchange_->Respond(std::move(response));
}

}  // namespace adapterd::http
