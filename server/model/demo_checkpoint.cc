#include "server/model/demo_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/file_util.h"
#include "server/common/torch_call.h"
#include "server/model/safetensors.h"

namespace adapterd::model {
namespace {

namespace fs = std::filesystem;

constexpr char kVersion[] = "demo-llama-v1";
constexpr int64_t kVocab = 2048, kHidden = 256, kInter = 688, kLayers = 4, kHeads = 8,
                  kKvHeads = 4;

constexpr char kConfig[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 2048,
  "hidden_size": 256,
  "intermediate_size": 688,
  "num_hidden_layers": 4,
  "num_attention_heads": 8,
  "num_key_value_heads": 4,
  "max_position_embeddings": 2048,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "rope_scaling": null,
  "hidden_act": "silu",
  "tie_word_embeddings": false,
  "attention_bias": false,
  "mlp_bias": false,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "torch_dtype": "float32"
}
)";

}  // namespace

std::string_view DemoConfigJson() { return kConfig; }

NamedTensors RandomDemoWeights() {
  // Weights: normal(0, 0.02) for matrices, 1 + normal(0, 0.1) for norms.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(20261123);
  auto mat = [&](int64_t out, int64_t in) {
    return at::normal(0.0, 0.02, {out, in}, gen, at::TensorOptions().dtype(at::kFloat));
  };
  auto norm = [&](int64_t n) { return 1.0 + at::normal(0.0, 0.1, {n}, gen, at::TensorOptions().dtype(at::kFloat)); };
  const int64_t head_dim = kHidden / kHeads;
  NamedTensors tensors;
  tensors.emplace_back("model.embed_tokens.weight", mat(kVocab, kHidden));
  for (int64_t i = 0; i < kLayers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    tensors.emplace_back(p + "input_layernorm.weight", norm(kHidden));
    tensors.emplace_back(p + "self_attn.q_proj.weight", mat(kHeads * head_dim, kHidden));
    tensors.emplace_back(p + "self_attn.k_proj.weight", mat(kKvHeads * head_dim, kHidden));
    tensors.emplace_back(p + "self_attn.v_proj.weight", mat(kKvHeads * head_dim, kHidden));
    tensors.emplace_back(p + "self_attn.o_proj.weight", mat(kHidden, kHeads * head_dim));
    tensors.emplace_back(p + "post_attention_layernorm.weight", norm(kHidden));
    tensors.emplace_back(p + "mlp.gate_proj.weight", mat(kInter, kHidden));
    tensors.emplace_back(p + "mlp.up_proj.weight", mat(kInter, kHidden));
    tensors.emplace_back(p + "mlp.down_proj.weight", mat(kHidden, kInter));
  }
  tensors.emplace_back("model.norm.weight", norm(kHidden));
  tensors.emplace_back("lm_head.weight", mat(kVocab, kHidden));
  return tensors;
}

absl::Status WriteDemoCheckpoint(const std::string& dir, const NamedTensors& weights,
                                 const std::vector<int64_t>& eos_token_ids) {
  std::vector<StTensorToWrite> out;
  for (const auto& [name, t] : weights) {
    if (!t.is_contiguous() || t.scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": must be a contiguous float32 tensor"));
    }
    out.push_back(StTensorToWrite{name, StDType::kF32, t.sizes().vec(),
                                  std::string_view(static_cast<const char*>(t.data_ptr()), t.nbytes())});
  }
  const fs::path d(dir);
  if (absl::Status s = WriteSafetensors((d / "model.safetensors").string(), out, {{"format", "pt"}}); !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteStringToFile((d / "config.json").string(), kConfig); !s.ok()) return s;
  const std::string eos = eos_token_ids.size() == 1 ? absl::StrCat(eos_token_ids[0])
                                                    : absl::StrCat("[", absl::StrJoin(eos_token_ids, ", "), "]");
  return WriteStringToFile((d / "generation_config.json").string(), absl::StrCat(R"({"bos_token_id": 1, "eos_token_id": )", eos, "}\n"));
}

absl::StatusOr<std::string> EnsureDemoCheckpoint(const std::string& cache_dir) {
  const fs::path dir = fs::path(cache_dir) / kVersion;
  if (fs::exists(dir / "model.safetensors")) return dir.string();
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(cache_dir, ": ", ec.message()));
  const fs::path tmp = fs::path(cache_dir) / absl::StrCat(".", kVersion, ".tmp.", getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat(tmp.string(), ": ", ec.message()));
  LOG(INFO) << "generating the demo model in " << dir.string();
  absl::StatusOr<NamedTensors> weights = TorchCall("generating demo weights", [] { return RandomDemoWeights(); });
  if (!weights.ok()) return weights.status();
  if (absl::Status s = WriteDemoCheckpoint(tmp.string(), *weights, {2}); !s.ok()) return s;
  fs::rename(tmp, dir, ec);
  if (ec) {
    fs::remove_all(tmp);
    if (fs::exists(dir / "model.safetensors")) return dir.string();  // another process won
    return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
  }
  return dir.string();
}

}  // namespace adapterd::model
