// The loader of each adapter kind. Each is an AdapterKindLoader (see
// loaded_adapter.h); LoadAdapter (adapter_loader.h) picks one from the files.
#ifndef ADAPTERD_ADAPTERS_KIND_LOADERS_H_
#define ADAPTERD_ADAPTERS_KIND_LOADERS_H_

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/loaded_adapter.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// PEFT LoRA and DoRA (peft_type "LORA"). Validates every tensor against the
// base (each maps to a real projection, shapes match, values are finite,
// nothing targeted is missing) and builds the weights in the base's dtype and
// device. The summary's type is "lora" or "dora", with the distinct ranks and
// target projections. Errors name the file and tensor: INVALID_ARGUMENT for
// malformed input, FAILED_PRECONDITION for an adapter that does not fit this
// base model. Thread-safe (reads the base only).
absl::StatusOr<LoadedAdapter> LoadLora(const AdapterFiles& files, const model::LlamaModel& base);

// PEFT IA3 (peft_type "IA3"). Parses the config (target_modules and
// feedforward_modules as PEFT matches them; unsupported keys rejected by
// name), then requires exactly one finite `ia3_l` per targeted module, shaped
// [1, in] for feed-forward modules and [out, 1] otherwise. The summary lists
// the target projections and the feed-forward ones (whose input is scaled).
// Errors name the file and tensor. Thread-safe.
absl::StatusOr<LoadedAdapter> LoadIa3(const AdapterFiles& files, const model::LlamaModel& base);

// PEFT prompt tuning (peft_type "PROMPT_TUNING"). Requires
// num_virtual_tokens, a token_dim equal to the base's hidden size, one
// transformer submodule, and the single tensor `prompt_embeddings`
// [num_virtual_tokens, hidden] with finite values. The virtual tokens take
// positions 0..V-1 of every sequence that uses the adapter, as in PEFT's
// generate(). The summary's type is "prompt_tuning" with the number of
// virtual tokens. Errors name the file, key or tensor. Thread-safe.
absl::StatusOr<LoadedAdapter> LoadPromptTuning(const AdapterFiles& files, const model::LlamaModel& base);

// PEFT prefix tuning (peft_type "PREFIX_TUNING"). Requires
// num_virtual_tokens, num_layers equal to the base's (when given), and the
// single tensor `prompt_embeddings` [num_virtual_tokens, num_layers * 2 *
// num_kv_heads * head_dim] with finite values: PEFT saves the finished
// per-layer keys and values (with prefix_projection, the output of its MLP,
// which it runs at save time). They precede every sequence of the adapter
// in every layer, and its prompt takes positions num_virtual_tokens on, as
// in PEFT's generate(). The summary's type is "prefix_tuning" with the
// number of virtual tokens. Errors name the file, key or tensor. Thread-safe.
absl::StatusOr<LoadedAdapter> LoadPrefixTuning(const AdapterFiles& files, const model::LlamaModel& base);

// PEFT LLaMA-Adapter (peft_type "ADAPTION_PROMPT"). Requires adapter_len and
// adapter_layers, and for each of the last adapter_layers layers exactly
// `...layers.<i>.self_attn.adaption_prompt` [1, adapter_len, hidden] and
// `...adaption_gate` [1], finite. The prompt's keys and values are computed
// here, once, through the base's own k_proj and v_proj. The summary's type
// is "adaption_prompt" with adapter_len and adapter_layers. Errors name the
// file, key or tensor. Thread-safe.
absl::StatusOr<LoadedAdapter> LoadAdaptionPrompt(const AdapterFiles& files, const model::LlamaModel& base);

// AdapterHub bottleneck adapters (Houlsby, Pfeiffer, parallel). Requires the config's hidden
// size to be the base's, and exactly the tensors the config implies for every
// placed module (down/up projections, the optional LayerNorms and scaling),
// with the library's key names and shapes and finite values. The summary's
// type is "bottleneck", with the distinct widths, the locations, the
// non-linearity and whether the modules are parallel. Errors name the file,
// key or tensor. Thread-safe.
absl::StatusOr<LoadedAdapter> LoadBottleneck(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_KIND_LOADERS_H_
