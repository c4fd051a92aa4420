#include "sightline/host/metrics_registry.hpp"

#include <sightline/error.hpp>

#include <atomic>
#include <cmath>
#include <sstream>

namespace sightline::host {

namespace {

std::string label_text(const Labels& labels, const std::string& extra = {}) {
    std::string s;
    for (const auto& [k, v] : labels) {
        std::string escaped;
        for (char c : v) {
            if (c == '\\' || c == '"') escaped += '\\';
            if (c == '\n') { escaped += "\\n"; continue; }
            escaped += c;
        }
        s += (s.empty() ? "" : ",") + k + "=\"" + escaped + "\"";
    }
    if (!extra.empty()) s += (s.empty() ? "" : ",") + extra;
    return s.empty() ? "" : "{" + s + "}";
}

class AtomicDouble {
public:
    void add(double d) {
        double cur = v_.load(std::memory_order_relaxed);
        while (!v_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
        }
    }
    void set(double d) { v_.store(d, std::memory_order_relaxed); }
    double get() const { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> v_{0};
};

class CounterImpl final : public Counter {
public:
    void inc(double amount) override { value.add(amount); }
    AtomicDouble value;
};

class GaugeImpl final : public Gauge {
public:
    void set(double v) override { value.set(v); }
    AtomicDouble value;
};

class HistogramImpl final : public Histogram {
public:
    explicit HistogramImpl(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1) {}
    void observe(double v) override {
        std::size_t i = 0;
        while (i < bounds.size() && v > bounds[i]) ++i;
        std::lock_guard lock(mutex);
        ++counts[i];
        sum += v;
    }
    std::vector<double> bounds;
    mutable std::mutex mutex;
    std::vector<std::uint64_t> counts;
    double sum = 0;
};

std::string num(double v) {
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    std::ostringstream s;
    s.precision(10);
    s << v;
    return s.str();
}

}  // namespace

struct MetricsRegistry::Series {
    Labels labels;
    std::unique_ptr<CounterImpl> counter;
    std::unique_ptr<GaugeImpl> gauge;
    std::unique_ptr<HistogramImpl> histogram;
};

struct MetricsRegistry::Family {
    std::string name, help, type;
    std::map<std::string, Series> series;  // by rendered labels
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, const std::string& help, const char* type) {
    auto& f = families_[name];
    if (!f) f = std::make_unique<Family>(Family{"sightline_" + name, help, type, {}});
    if (f->type != type)
        throw Error(ErrorCode::invalid_argument, "metric " + name + " is a " + f->type + ", not a " + type);
    return *f;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help, const Labels& labels) {
    std::lock_guard lock(mutex_);
    auto& s = family(name, help, "counter").series[label_text(labels)];
    if (!s.counter) { s.labels = labels; s.counter = std::make_unique<CounterImpl>(); }
    return *s.counter;
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
    std::lock_guard lock(mutex_);
    auto& s = family(name, help, "gauge").series[label_text(labels)];
    if (!s.gauge) { s.labels = labels; s.gauge = std::make_unique<GaugeImpl>(); }
    return *s.gauge;
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                      const std::vector<double>& buckets, const Labels& labels) {
    std::lock_guard lock(mutex_);
    auto& s = family(name, help, "histogram").series[label_text(labels)];
    if (!s.histogram) { s.labels = labels; s.histogram = std::make_unique<HistogramImpl>(buckets); }
    return *s.histogram;
}

std::string MetricsRegistry::render() const {
    std::lock_guard lock(mutex_);
    std::ostringstream out;
    for (const auto& [_, f] : families_) {
        out << "# HELP " << f->name << " " << f->help << "\n# TYPE " << f->name << " " << f->type << "\n";
        for (const auto& [labels, s] : f->series) {
            if (s.counter) out << f->name << labels << " " << num(s.counter->value.get()) << "\n";
            if (s.gauge) out << f->name << labels << " " << num(s.gauge->value.get()) << "\n";
            if (s.histogram) {
                std::lock_guard hl(s.histogram->mutex);
                std::uint64_t cumulative = 0;
                for (std::size_t i = 0; i <= s.histogram->bounds.size(); ++i) {
                    cumulative += s.histogram->counts[i];
                    double le = i < s.histogram->bounds.size() ? s.histogram->bounds[i] : INFINITY;
                    out << f->name << "_bucket" << label_text(s.labels, "le=\"" + num(le) + "\"") << " " << cumulative << "\n";
                }
                out << f->name << "_sum" << labels << " " << num(s.histogram->sum) << "\n";
                out << f->name << "_count" << labels << " " << cumulative << "\n";
            }
        }
    }
    return out.str();
}

}  // namespace sightline::host
