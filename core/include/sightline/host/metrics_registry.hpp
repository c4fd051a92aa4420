#pragma once
#include <sightline/metrics.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace sightline::host {

// The host's metrics; renders the Prometheus text exposition format.
class MetricsRegistry final : public Metrics {
public:
    MetricsRegistry();
    ~MetricsRegistry() override;
    Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {}) override;
    Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {}) override;
    Histogram& histogram(const std::string& name, const std::string& help, const std::vector<double>& buckets,
                         const Labels& labels = {}) override;
    std::string render() const;

    struct Series;
    struct Family;

private:
    Family& family(const std::string& name, const std::string& help, const char* type);
    mutable std::mutex mutex_;
    std::map<std::string, std::unique_ptr<Family>> families_;
};

}  // namespace sightline::host
