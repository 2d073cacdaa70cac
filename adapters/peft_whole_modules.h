// The tensors of a PEFT LoRA save that live outside the decoder layers:
// whole modules (modules_to_save: embed_tokens, lm_head, a SEQ_CLS adapter's
// score head), trainable token rows, and LoRA on embed_tokens.
#ifndef ADAPTERD_ADAPTERS_PEFT_WHOLE_MODULES_H_
#define ADAPTERD_ADAPTERS_PEFT_WHOLE_MODULES_H_

#include "absl/status/status.h"
#include "adapters/adapter_files.h"
#include "adapters/loaded_adapter.h"
#include "adapters/lora_config.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"

namespace adapterd::adapters {

// Whether `t` is a PEFT key outside the decoder layers
// ("base_model.model.lm_head.weight", "base_model.model.score.weight", ...),
// which LoadWholeModules reads rather than the per-layer scan.
bool IsWholeModuleTensor(const model::StTensorInfo& t);

// Reads every whole-module tensor of `files` into `out` and describes them
// in `summary` (task_type, labels, pad_token_id, multi_label,
// modules_to_save, trainable_tokens; embed_tokens' rank and target):
//   - task_type SEQ_CLS: `score.weight` [num_labels, hidden], the labels
//     from id2label in adapter_config.json or else in config.json beside it
//     (else "0", "1", ...), and pad_token_id and problem_type from that
//     config.json;
//   - modules_to_save "embed_tokens" and "lm_head": [vocab, hidden] copies;
//     "classifier" on a SEQ_CLS adapter is PEFT's own entry and matches
//     nothing in these models;
//   - trainable_token_indices: the replacement rows of each module (on a
//     base with tied embeddings, embed_tokens' rows also replace the head's,
//     as PEFT ties them);
//   - LoRA on embed_tokens (lora_embedding_A/B), and the base weight PEFT
//     saves beside it, kept only if it differs from the base's.
// Errors name the key or tensor: FAILED_PRECONDITION for a module the base
// does not have, a shape that does not fit it (a head whose width is not the
// hidden size) or a token id beyond its vocabulary; INVALID_ARGUMENT for a
// missing or unexpected tensor, a module adapterd does not replace, and
// conflicting or malformed entries. Thread-safe (reads the base only).
absl::Status LoadWholeModules(const AdapterFiles& files, const LoraConfig& config, const model::LlamaModel& base,
                              model::AdapterWeights& out, AdapterSummary& summary);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_PEFT_WHOLE_MODULES_H_
