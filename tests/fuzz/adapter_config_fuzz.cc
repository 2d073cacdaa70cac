// libFuzzer target: the adapter config parsers (PEFT LoRA/DoRA, the keys
// prompt and prefix tuning share, and AdapterHub bottleneck) on arbitrary
// text. Each must accept or reject with a status,
// never crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string>

#include "adapters/bottleneck_config.h"
#include "adapters/lora_config.h"
#include "adapters/peft_fields.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto lora = adapterd::adapters::LoraConfig::FromJson(text, "fuzz/adapter_config.json");
  if (lora.ok()) {
    // Module matching runs the config's patterns against every projection name.
    for (int layer = 0; layer < 4; ++layer) {
      for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
        const std::string name = "model.layers." + std::to_string(layer) + "." + m;
        if (lora->Targets(name, layer)) (void)lora->ScaleFor(name);
      }
    }
  }
  (void)adapterd::adapters::BottleneckConfig::FromJson(text, "fuzz/adapter_config.json");
  const auto j = adapterd::adapters::OrderedJson::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && j.is_object()) {
    (void)adapterd::adapters::ParsePromptLearning(j, "fuzz/adapter_config.json", 2048);
  }
  return 0;
}
