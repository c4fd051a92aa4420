// index-bruteforce: exact nearest neighbours over every gallery descriptor, Lowe's ratio test,
// votes per item. It is the correctness baseline every other index is compared with.
#include <opencv2/core.hpp>
#include <sightline/plugin.hpp>
#include <sightline/votes.hpp>
#include <sightline/nearest.hpp>
#include <sightline/serialize.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;

struct Item {
    std::string id;
    std::vector<cv::Point2f> points;
    cv::Mat descriptors;
};

// Searches read an immutable snapshot; a change builds a new list of item pointers (cheap) and
// swaps it in, so an add never waits for running searches and searches never see half an item.
using Snapshot = std::vector<std::shared_ptr<const Item>>;

class BruteForceIndex final : public sightline::Index {
public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description = "exact kNN (Hamming for binary, L2 for float descriptors) with Lowe's ratio test";
    static sightline::ConfigSchema config_schema() {
        static const std::array<ConfigKey, 2> keys{{
            {.name = "ratio", .type = ConfigType::number, .default_value = "0.8", .min = 0.1, .max = 1.0,
             .description = "Lowe's ratio: keep a match if nearest < ratio x second nearest (1.0 keeps all)"},
            {.name = "max_distance", .type = ConfigType::number, .default_value = "0", .min = 0,
             .description = "drop matches farther than this (0: no limit); Hamming bits or L2"},
        }};
        return keys;
    }

    explicit BruteForceIndex(sightline::Context& ctx)
        : ratio_(static_cast<float>(ctx.config().get_double("ratio"))),
          max_distance_(static_cast<float>(ctx.config().get_double("max_distance"))),
          snapshot_(std::make_shared<const Snapshot>()) {}

    void add(const std::string& id, const sightline::Features& f) override {
        check_features(f, "item '" + id + "'");
        auto item = std::make_shared<Item>();
        item->id = id;
        item->descriptors = f.descriptors.clone();
        item->points.reserve(f.keypoints.size());
        for (const auto& k : f.keypoints) item->points.push_back(k.pt);
        std::lock_guard lock(write_mutex_);
        // The item it replaces does not count: an index holding only that one may change layout.
        if (const Item* held = held_layout(*current(), id); held && !f.descriptors.empty() &&
                                                           !same_layout(held->descriptors, f.descriptors))
            throw sightline::Error(sightline::ErrorCode::invalid_argument,
                                   "index-bruteforce: item '" + id + "' has " + layout_name(f.descriptors) +
                                       " but this index holds " + layout_name(held->descriptors) +
                                       "; one index holds one descriptor type and width (a pipeline uses one "
                                       "features plugin; recompute the gallery when changing it)");
        auto next = std::make_shared<Snapshot>(*current());
        auto it = std::find_if(next->begin(), next->end(), [&](const auto& p) { return p->id == id; });
        if (it != next->end())
            *it = std::move(item);
        else
            next->push_back(std::move(item));
        publish(std::move(next));
    }

    bool remove(const std::string& id) override {
        std::lock_guard lock(write_mutex_);
        auto next = std::make_shared<Snapshot>(*current());
        auto it = std::find_if(next->begin(), next->end(), [&](const auto& p) { return p->id == id; });
        if (it == next->end()) return false;
        next->erase(it);
        publish(std::move(next));
        return true;
    }

    std::vector<sightline::Candidate> search(const sightline::Features& query, std::size_t k) const override {
        auto snap = current();
        const cv::Mat& q = query.descriptors;
        if (q.empty() || k == 0) return {};
        check_features(query, "the query");
        if (const Item* held = held_layout(*snap); held && !same_layout(held->descriptors, q))
            throw sightline::Error(sightline::ErrorCode::invalid_argument,
                                   "index-bruteforce: the query has " + layout_name(q) + " but the index holds " +
                                       layout_name(held->descriptors) +
                                       "; query and gallery must come from the same features plugin");
        if (snap->empty()) return {};
        const int nq = q.rows;
        const std::size_t ni = snap->size();

        // Per item, the two nearest gallery descriptors of each query descriptor. The global best
        // two are the best two of these, so the ratio test stays exact without one giant matrix.
        std::vector<cv::Mat> dist(ni), idx(ni);
        cv::parallel_for_(cv::Range(0, static_cast<int>(ni)), [&](const cv::Range& r) {
            for (int i = r.start; i < r.end; ++i) {
                const Item& item = *(*snap)[static_cast<std::size_t>(i)];
                if (item.descriptors.empty()) continue;
                sightline::nearest_two(q, item.descriptors, dist[i], idx[i]);
            }
        });

        struct Best {
            float d1 = std::numeric_limits<float>::max(), d2 = std::numeric_limits<float>::max();
            int item = -1, row = -1;
        };
        std::vector<Best> best(static_cast<std::size_t>(nq));
        for (std::size_t i = 0; i < ni; ++i) {
            if (dist[i].empty()) continue;
            for (int r = 0; r < nq; ++r) {
                const float* d = dist[i].ptr<float>(r);
                const int* ix = idx[i].ptr<int>(r);
                Best& b = best[static_cast<std::size_t>(r)];
                for (int c = 0; c < dist[i].cols; ++c) {
                    if (ix[c] == -1) continue;
                    if (d[c] < b.d1) {
                        b.d2 = b.d1;
                        b.d1 = d[c];
                        b.item = static_cast<int>(i);
                        b.row = ix[c];
                    } else if (d[c] < b.d2) {
                        b.d2 = d[c];
                    }
                }
            }
        }

        std::unordered_map<int, sightline::Candidate> by_item;
        for (int r = 0; r < nq; ++r) {
            const Best& b = best[static_cast<std::size_t>(r)];
            if (b.item < 0) continue;
            if (max_distance_ > 0 && b.d1 > max_distance_) continue;
            if (b.d2 != std::numeric_limits<float>::max() && b.d1 >= ratio_ * b.d2) continue;
            const Item& item = *(*snap)[static_cast<std::size_t>(b.item)];
            auto& cand = by_item[b.item];
            cand.id = item.id;
            cand.correspondences.push_back(
                {query.keypoints[static_cast<std::size_t>(r)].pt, item.points[static_cast<std::size_t>(b.row)], b.d1});
        }
        return sightline::rank_by_votes(by_item, k);
    }

    std::size_t size() const override { return current()->size(); }

    void save(std::ostream& out) const override {
        auto snap = current();
        sightline::BinaryWriter w(out);
        w.bytes(kMagic, 4);
        w.pod<std::uint32_t>(kVersion);
        w.pod<std::uint64_t>(snap->size());
        for (const auto& item : *snap) {
            w.string(item->id);
            w.pod<std::uint32_t>(static_cast<std::uint32_t>(item->points.size()));
            for (const auto& p : item->points) { w.pod(p.x); w.pod(p.y); }
            w.mat(item->descriptors);
        }
        if (!out) throw sightline::Error(sightline::ErrorCode::unavailable, "index-bruteforce: writing the snapshot failed");
    }

    void load(std::istream& in) override {
        sightline::BinaryReader r(in, "index-bruteforce snapshot");
        char magic[4];
        r.read(magic, 4);
        if (std::memcmp(magic, kMagic, 4) != 0) r.fail("not a brute-force index snapshot (bad magic)");
        auto v = r.pod<std::uint32_t>();
        if (v != kVersion) r.fail("unsupported snapshot version " + std::to_string(v));
        auto n = r.pod<std::uint64_t>();
        auto next = std::make_shared<Snapshot>();
        for (std::uint64_t i = 0; i < n; ++i) {
            auto item = std::make_shared<Item>();
            item->id = r.string();
            auto np = r.pod<std::uint32_t>();
            if (np > (1u << 22)) r.fail("implausible point count");
            item->points.resize(np);
            for (auto& p : item->points) { p.x = r.pod<float>(); p.y = r.pod<float>(); }
            item->descriptors = r.mat();
            if (item->descriptors.rows != static_cast<int>(np)) r.fail("descriptor rows do not match points");
            if (const Item* held = held_layout(*next); held && !item->descriptors.empty() &&
                                                      !same_layout(held->descriptors, item->descriptors))
                r.fail("item '" + item->id + "' has " + layout_name(item->descriptors) + ", others " +
                       layout_name(held->descriptors));
            next->push_back(std::move(item));
        }
        std::lock_guard lock(write_mutex_);
        publish(std::move(next));
    }

private:
    // Correspondences are read as keypoints[row]: the two must agree before anything is stored.
    static void check_features(const sightline::Features& f, const std::string& what) {
        const cv::Mat& d = f.descriptors;
        if (d.empty()) return;
        if (d.type() != CV_8U && d.type() != CV_32F)
            throw sightline::Error(sightline::ErrorCode::invalid_argument,
                                   "index-bruteforce: " + what + ": descriptors must be CV_8U or CV_32F, found " +
                                       layout_name(d));
        if (f.keypoints.size() != static_cast<std::size_t>(d.rows))
            throw sightline::Error(sightline::ErrorCode::invalid_argument,
                                   "index-bruteforce: " + what + " has " + std::to_string(f.keypoints.size()) +
                                       " keypoints but " + std::to_string(d.rows) + " descriptor rows");
    }
    static std::string layout_name(const cv::Mat& d) {
        if (d.type() == CV_8U) return "binary descriptors of " + std::to_string(d.cols) + " bytes (CV_8U)";
        if (d.type() == CV_32F) return "float descriptors of " + std::to_string(d.cols) + " values (CV_32F)";
        return "descriptors of OpenCV type " + std::to_string(d.type());
    }
    static bool same_layout(const cv::Mat& a, const cv::Mat& b) { return a.type() == b.type() && a.cols == b.cols; }
    // An item with descriptors other than `except`: every such item has the same layout.
    static const Item* held_layout(const Snapshot& snap, const std::string& except = {}) {
        for (const auto& p : snap)
            if (!p->descriptors.empty() && (except.empty() || p->id != except)) return p.get();
        return nullptr;
    }

    static constexpr char kMagic[4] = {'S', 'L', 'B', 'F'};
    static constexpr std::uint32_t kVersion = 1;

    std::shared_ptr<const Snapshot> current() const { return std::atomic_load(&snapshot_); }
    void publish(std::shared_ptr<Snapshot> next) {
        std::atomic_store(&snapshot_, std::shared_ptr<const Snapshot>(std::move(next)));
    }

    float ratio_;
    float max_distance_;
    mutable std::mutex write_mutex_;
    std::shared_ptr<const Snapshot> snapshot_;
};

}  // namespace

SIGHTLINE_PLUGIN(index, "bruteforce", BruteForceIndex)
