#pragma once
#include <string>
#include <utility>
#include <vector>

#include "sightline/version.hpp"

namespace sightline {

using Labels = std::vector<std::pair<std::string, std::string>>;

class SIGHTLINE_API Counter {
public:
    virtual ~Counter() = default;
    virtual void inc(double amount = 1.0) = 0;
};

class SIGHTLINE_API Gauge {
public:
    virtual ~Gauge() = default;
    virtual void set(double value) = 0;
};

class SIGHTLINE_API Histogram {
public:
    virtual ~Histogram() = default;
    virtual void observe(double value) = 0;
};

// The host's metrics registry as a plugin sees it. Names are prefixed with "sightline_" by the
// host; the returned references live as long as the host.
class SIGHTLINE_API Metrics {
public:
    virtual ~Metrics() = default;
    virtual Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {}) = 0;
    virtual Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {}) = 0;
    // Buckets in the unit of the observed values (seconds for latencies, by Prometheus convention).
    virtual Histogram& histogram(const std::string& name, const std::string& help,
                                 const std::vector<double>& buckets, const Labels& labels = {}) = 0;
};

}  // namespace sightline
