#include "tests/support/reference_outputs.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace adapterd::testing {

void WritePrompts(const std::string& path, const std::vector<std::vector<int64_t>>& prompts) {
  std::vector<std::string> rows;
  for (const auto& prompt : prompts) rows.push_back(absl::StrCat("[", absl::StrJoin(prompt, ","), "]"));
  std::ofstream out(path);
  out << "[" << absl::StrJoin(rows, ",") << "]";
  out.close();
  if (!out) ADD_FAILURE() << "cannot write " << path;
}

at::Tensor ReadReference(const model::SafetensorsFile& f, const std::string& name) {
  const model::StTensorInfo* info = f.Find(name);
  if (info == nullptr) {
    ADD_FAILURE() << "reference output lacks " << name;
    return at::zeros({1});
  }
  auto dtype = info->dtype == model::StDType::kI64 ? at::kLong : at::kFloat;
  auto data = f.Data(*info);
  return at::from_blob(const_cast<std::byte*>(data.data()), info->shape, at::dtype(dtype)).clone();
}

std::vector<int64_t> ToVector(const at::Tensor& t) {
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

grpc::Status LoadAdapterByPath(v1::Admin::Stub& admin, const std::string& id, const std::string& dir,
                               v1::AdapterInfo* info) {
  grpc::ClientContext ctx;
  v1::LoadAdapterRequest req;
  req.set_adapter_id(id);
  req.set_path(dir);
  return admin.LoadAdapter(&ctx, req, info);
}

grpc::Status UploadAdapterDir(v1::Admin::Stub& admin, const std::string& id, const std::string& dir,
                              v1::AdapterInfo* info) {
  grpc::ClientContext ctx;
  auto w = admin.UploadAdapter(&ctx, info);
  v1::UploadAdapterRequest msg;
  msg.mutable_header()->set_adapter_id(id);
  w->Write(msg);
  const std::string weights =
      std::filesystem::exists(dir + "/adapter.safetensors") ? "adapter.safetensors" : "adapter_model.safetensors";
  for (const std::string& name : {std::string("adapter_config.json"), weights, std::string("config.json")}) {
    if (!std::filesystem::exists(dir + "/" + name)) continue;  // config.json is optional
    std::ifstream in(dir + "/" + name, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t off = 0; off < data.size(); off += 64 << 10) {  // several chunks per file
      msg.Clear();
      msg.mutable_chunk()->set_file_name(name);
      msg.mutable_chunk()->set_data(data.substr(off, 64 << 10));
      w->Write(msg);
    }
  }
  w->WritesDone();
  return w->Finish();
}

}  // namespace adapterd::testing
