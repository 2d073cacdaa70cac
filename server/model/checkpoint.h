// Weights of a Hugging Face checkpoint directory, read through mmap.
#ifndef ADAPTERD_SERVER_MODEL_CHECKPOINT_H_
#define ADAPTERD_SERVER_MODEL_CHECKPOINT_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/safetensors.h"

namespace adapterd::model {

// The safetensors files of one checkpoint: `model.safetensors`, or the shards
// named by `model.safetensors.index.json`. Open() validates every file's
// header and that the index names only existing tensors. Not thread-safe;
// used by one loader at a time.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  // Returns tensor `name` converted to `dtype` on `device`, after checking that
  // its shape is `shape` and that every value is finite (INVALID_ARGUMENT
  // naming the first NaN or infinity's index otherwise; see FindNonFinite).
  // An F32 tensor that is already in the requested form aliases the mapped
  // file (no copy). Errors name the file and the tensor.
  absl::StatusOr<at::Tensor> Get(const std::string& name, const std::vector<int64_t>& shape,
                                 c10::ScalarType dtype, c10::Device device);
  bool Has(const std::string& name) const { return where_.contains(name); }

  // Tells the checkpoint that tensor `name` was copied and its bytes in the
  // file will not be read again (the model concatenated it): the whole
  // pages it covers leave the process's resident memory (they are read
  // again from the file if anything ever touches them). Other tensors that
  // alias the mapping are unaffected. A no-op for unknown names and for
  // files not mapped from disk.
  void Release(const std::string& name) const;
  // Names that no Get() has asked for so far.
  std::vector<std::string> UnusedNames() const;
  // Reads every page of every file once, logging file, bytes and rate, so that
  // serving never stalls on page faults.
  void Prefault() const;
  uint64_t total_bytes() const;

 private:
  Checkpoint() = default;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
  std::map<std::string, bool> used_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_CHECKPOINT_H_
