#include "server/metrics/rpc_metrics.h"

#include <string>

namespace adapterd::metrics {

RpcMetrics::RpcMetrics(prometheus::Registry& r)
    : requests_(&prometheus::BuildCounter()
                     .Name("adapterd_requests_total")
                     .Help("Finished RPCs by method and gRPC status code")
                     .Register(r)) {}

void RpcMetrics::RecordRpc(std::string_view rpc, std::string_view code) {
  requests_->Add({{"rpc", std::string(rpc)}, {"code", std::string(code)}}).Increment();
}

}  // namespace adapterd::metrics
