// Histogram buckets and builders shared by the metric families of every layer.
#ifndef ADAPTERD_SERVER_METRICS_METRIC_BUCKETS_H_
#define ADAPTERD_SERVER_METRICS_METRIC_BUCKETS_H_

#include <string>

#include "prometheus/gauge.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace adapterd::metrics {

// Latency buckets from 1 ms to about 65 s, doubling.
prometheus::Histogram::BucketBoundaries LatencyBuckets();
// Count buckets from 1 to 8192, doubling.
prometheus::Histogram::BucketBoundaries CountBuckets();

// One unlabelled series of a new family.
prometheus::Histogram* AddHistogram(prometheus::Registry& r, const std::string& name, const std::string& help,
                                    const prometheus::Histogram::BucketBoundaries& buckets);
prometheus::Counter* AddCounter(prometheus::Registry& r, const std::string& name, const std::string& help);
prometheus::Gauge* AddGauge(prometheus::Registry& r, const std::string& name, const std::string& help);

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_METRIC_BUCKETS_H_
