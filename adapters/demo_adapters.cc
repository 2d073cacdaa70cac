#include "adapters/demo_adapters.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/torch_call.h"
#include "server/model/adapter_weights.h"
#include "server/model/safetensors.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;

struct DemoSpec {
  const char* id;
  int64_t r;
  std::vector<model::Proj> targets;
  uint64_t seed;
};

absl::Status Write(const fs::path& dir, const model::ModelConfig& c, const DemoSpec& spec) {
  absl::StatusOr<model::NamedTensors> tensors = TorchCall("generating demo adapter", [&] {
    model::NamedTensors out;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(spec.seed);
    const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (model::Proj p : spec.targets) {
        int64_t out_dim = c.hidden_size, in = c.hidden_size;
        switch (p) {
          case model::Proj::kQ: out_dim = q; break;
          case model::Proj::kK:
          case model::Proj::kV: out_dim = kv; break;
          case model::Proj::kO: in = q; break;
          case model::Proj::kGate:
          case model::Proj::kUp: out_dim = c.intermediate_size; break;
          case model::Proj::kDown: in = c.intermediate_size; break;
        }
        const std::string key =
            absl::StrCat("base_model.model.model.layers.", l, ".", std::string(model::ProjPath(p)));
        out.emplace_back(key + ".lora_A.weight", at::normal(0.0, 1.0 / std::sqrt(double(in)), {spec.r, in}, gen));
        out.emplace_back(key + ".lora_B.weight",
                         at::normal(0.0, 0.5 / std::sqrt(double(spec.r)), {out_dim, spec.r}, gen));
      }
    }
    return out;
  });
  if (!tensors.ok()) return tensors.status();
  return WritePeftLora(dir.string(), spec.r, 2.0 * spec.r, spec.targets, *tensors);
}

}  // namespace

absl::Status WritePeftLora(const std::string& dir, int64_t r, double alpha, const std::vector<model::Proj>& targets,
                           const model::NamedTensors& tensors) {
  std::vector<model::StTensorToWrite> out;
  for (const auto& [name, t] : tensors) {
    if (!t.is_contiguous() || t.scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": must be a contiguous float32 tensor"));
    }
    out.push_back({name, model::StDType::kF32, t.sizes().vec(),
                   std::string_view(static_cast<const char*>(t.data_ptr()), t.nbytes())});
  }
  const fs::path d(dir);
  if (absl::Status s = model::WriteSafetensors((d / "adapter_model.safetensors").string(), out, {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  std::vector<std::string> names;
  for (model::Proj p : targets) names.push_back(absl::StrCat("\"", std::string(model::ProjName(p)), "\""));
  std::ofstream cfg(d / "adapter_config.json");
  cfg << absl::StrCat(R"({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": )", r, R"(, "lora_alpha": )", alpha,
                      R"(, "target_modules": [)", absl::StrJoin(names, ", "),
                      R"(], "bias": "none", "lora_dropout": 0.0, "use_rslora": false, "use_dora": false})")
      << "\n";
  cfg.close();
  if (!cfg) return absl::InternalError(absl::StrCat((d / "adapter_config.json").string(), ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> EnsureDemoAdapters(
    const std::string& cache_dir, const model::ModelConfig& base) {
  using model::Proj;
  const std::vector<DemoSpec> specs = {
      {"demo-qv-r4", 4, {Proj::kQ, Proj::kV}, 7001},
      {"demo-all-r8", 8, {Proj::kQ, Proj::kK, Proj::kV, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown}, 7002},
  };
  std::vector<std::pair<std::string, std::string>> out;
  for (const DemoSpec& spec : specs) {
    const fs::path dir = fs::path(cache_dir) / "demo-adapters-v1" / spec.id;
    if (!fs::exists(dir / "adapter_model.safetensors")) {
      std::error_code ec;
      const fs::path tmp = fs::path(dir.string() + ".tmp." + std::to_string(getpid()));
      fs::remove_all(tmp, ec);
      fs::create_directories(tmp, ec);
      if (ec) return absl::InternalError(absl::StrCat(tmp.string(), ": ", ec.message()));
      if (absl::Status s = Write(tmp, base, spec); !s.ok()) return s;
      fs::rename(tmp, dir, ec);
      if (ec && !fs::exists(dir / "adapter_model.safetensors")) {
        return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
      }
      fs::remove_all(tmp, ec);
    }
    out.emplace_back(spec.id, dir.string());
  }
  return out;
}

}  // namespace adapterd::adapters
