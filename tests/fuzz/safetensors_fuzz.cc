// libFuzzer target: the safetensors reader on arbitrary bytes. Every input
// must parse or be rejected with a status; every tensor a parsed file lists
// must be readable within the buffer, and the non-finite scan must read each
// one (at any alignment) without leaving it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/model/finite_check.h"
#include "server/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  adapterd::model::SafetensorsLimits limits;
  limits.max_header_bytes = 1 << 20;
  limits.max_tensors = 4096;
  auto file = adapterd::model::SafetensorsFile::FromBytes(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz", limits);
  if (!file.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& t : (*file)->tensors()) {
    auto bytes = (*file)->Data(t);
    if (!bytes.empty()) sink = sink ^ static_cast<uint8_t>(bytes.front()) ^ static_cast<uint8_t>(bytes.back());
    (void)(*file)->Find(t.name);
    (void)adapterd::model::CheckFinite(**file, t);
  }
  return 0;
}
