// The transports' metric families.
#ifndef ADAPTERD_SERVER_METRICS_RPC_METRICS_H_
#define ADAPTERD_SERVER_METRICS_RPC_METRICS_H_

#include <string_view>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"

namespace adapterd::metrics {

// Registers the transports' families in a registry owned by the caller.
// Label values come from closed sets (method names, status code names).
// Thread-safe.
class RpcMetrics {
 public:
  explicit RpcMetrics(prometheus::Registry& registry);
  RpcMetrics(const RpcMetrics&) = delete;
  RpcMetrics& operator=(const RpcMetrics&) = delete;

  // One finished call: `rpc` is the method name, `code` the gRPC status name.
  void RecordRpc(std::string_view rpc, std::string_view code);

 private:
  prometheus::Family<prometheus::Counter>* requests_;
};

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_RPC_METRICS_H_
