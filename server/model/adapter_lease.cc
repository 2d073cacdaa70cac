#include "server/model/adapter_lease.h"

namespace adapterd::model {

std::shared_ptr<AdapterLease> LeaseResident(std::string adapter_id,
                                            std::shared_ptr<const AdapterWeights> weights) {
  if (weights == nullptr) return nullptr;
  return std::make_shared<ResidentLease>(std::move(adapter_id), std::move(weights));
}

}  // namespace adapterd::model
