// A real AdapterStore whose Put and Remove call test hooks first (or, for
// after_put, once the version is written), on the caller's thread, so that
// tests can hold a store operation at a chosen point and act in that window.
// Set the hooks before the store is used; they are not guarded.
#ifndef ADAPTERD_TESTS_FAKES_HOOKED_STORE_H_
#define ADAPTERD_TESTS_FAKES_HOOKED_STORE_H_

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "adapters/adapter_store.h"

namespace adapterd::testing {

class HookedStore : public adapters::AdapterStore {
 public:
  // A store in `dir`, which must be empty or absent.
  static std::unique_ptr<HookedStore> Create(const std::string& dir) {
    std::filesystem::create_directories(dir);
    return std::unique_ptr<HookedStore>(new HookedStore(dir));
  }

  std::function<void(const std::string& id)> before_put, after_put, before_remove;

  absl::StatusOr<adapters::DiskCopy> Put(const std::string& id, const adapters::AdapterSource& source,
                                         bool pinned, bool replace) override {
    if (before_put) before_put(id);
    absl::StatusOr<adapters::DiskCopy> r = AdapterStore::Put(id, source, pinned, replace);
    if (after_put) after_put(id);
    return r;
  }
  absl::Status Remove(const std::string& id) override {
    if (before_remove) before_remove(id);
    return AdapterStore::Remove(id);
  }

 private:
  explicit HookedStore(const std::string& dir) : AdapterStore(dir) {}
};

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_FAKES_HOOKED_STORE_H_
