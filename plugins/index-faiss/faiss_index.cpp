// index-faiss: approximate nearest neighbours over every gallery descriptor with FAISS, then the
// same Lowe's ratio test and per-item votes as index-bruteforce, so the host's verification sees
// the same kind of candidates. Binary descriptors (ORB) go into a Hamming index, float ones
// (SIFT, SURF) into an L2 index; `method` picks an HNSW graph or an exact flat scan.
//
// Every gallery vector gets FAISS's sequential label (0, 1, 2 ...); an item's vectors are added
// together, so an item owns one contiguous label range and `owner_` maps a label to its item.
// An HNSW graph cannot forget a vector: a removed or replaced item becomes a tombstone (its
// vectors stay in FAISS and are filtered out of every result) until tombstones exceed
// `rebuild_share` of the stored vectors and the graph is rebuilt from the live ones. A flat index
// removes for real (FAISS compacts it and the labels after the gap shift down).
#include <faiss/IndexBinaryFlat.h>
#include <faiss/IndexBinaryHNSW.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <opencv2/core.hpp>
#include <sightline/plugin.hpp>
#include <sightline/votes.hpp>
#include <sightline/serialize.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;
using sightline::Error;
using sightline::ErrorCode;
using idx_t = faiss::Index::idx_t;

constexpr const char* kName = "index-faiss";

enum class Method : std::uint8_t { hnsw = 0, flat = 1 };

const char* method_name(Method m) { return m == Method::hnsw ? "hnsw" : "flat"; }

std::string layout_name(int type, int width) {
    if (type == CV_8U) return "binary descriptors of " + std::to_string(width) + " bytes (CV_8U)";
    if (type == CV_32F) return "float descriptors of " + std::to_string(width) + " values (CV_32F)";
    return "descriptors of type " + std::to_string(type);
}

// Runs a FAISS call and turns whatever it throws into a sightline::Error naming the operation,
// so no faiss::FaissException (or other exception type) leaves the plugin.
template <class F> decltype(auto) guarded(const std::string& what, F&& f) {
    try {
        return f();
    } catch (const Error&) {
        throw;
    } catch (const faiss::FaissException& e) {
        throw Error(ErrorCode::internal, std::string(kName) + ": " + what + ": FAISS failed: " + e.what());
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::resource_exhausted,
                    std::string(kName) + ": " + what + ": out of memory (a smaller gallery, fewer features per "
                                                        "image or a smaller `m` needs less)");
    } catch (const std::exception& e) {
        throw Error(ErrorCode::internal, std::string(kName) + ": " + what + ": " + e.what());
    }
}

// Sets this thread's OpenMP team size for the FAISS calls in its scope (OpenMP keeps the setting
// per calling thread, so concurrent searches on host workers do not disturb each other).
class OmpThreads {
public:
    explicit OmpThreads(int n) : active_(n > 0) {
        if (!active_) return;
        previous_ = omp_get_max_threads();
        omp_set_num_threads(n);
    }
    ~OmpThreads() {
        if (active_) omp_set_num_threads(previous_);
    }
    OmpThreads(const OmpThreads&) = delete;
    OmpThreads& operator=(const OmpThreads&) = delete;

private:
    bool active_;
    int previous_ = 1;
};

// One FAISS index, binary (Hamming over width*8 bits) or float (squared L2 over width values).
struct Store {
    std::unique_ptr<faiss::IndexBinary> binary;
    std::unique_ptr<faiss::Index> real;

    bool empty() const { return !binary && !real; }
    idx_t ntotal() const { return binary ? binary->ntotal : real ? real->ntotal : 0; }

    static Store make(Method method, int type, int width, int m, int ef_construction, int ef_search) {
        Store s;
        if (type == CV_8U) {
            if (method == Method::hnsw) {
                auto h = std::make_unique<faiss::IndexBinaryHNSW>(width * 8, m);
                h->hnsw.efConstruction = ef_construction;
                h->hnsw.efSearch = ef_search;
                s.binary = std::move(h);
            } else {
                s.binary = std::make_unique<faiss::IndexBinaryFlat>(width * 8);
            }
        } else {
            if (method == Method::hnsw) {
                auto h = std::make_unique<faiss::IndexHNSWFlat>(width, m);
                h->hnsw.efConstruction = ef_construction;
                h->hnsw.efSearch = ef_search;
                s.real = std::move(h);
            } else {
                s.real = std::make_unique<faiss::IndexFlatL2>(width);
            }
        }
        return s;
    }

    void add(const cv::Mat& d) const {
        if (binary)
            binary->add(d.rows, d.ptr<std::uint8_t>());
        else
            real->add(d.rows, d.ptr<float>());
    }

    // k nearest per query row, ascending; distances as Hamming bits or (not squared) L2.
    void search(const cv::Mat& q, idx_t k, std::vector<float>& dist, std::vector<idx_t>& labels) const {
        const std::size_t n = static_cast<std::size_t>(q.rows) * static_cast<std::size_t>(k);
        labels.assign(n, -1);
        dist.assign(n, 0.f);
        if (binary) {
            std::vector<std::int32_t> d(n);
            binary->search(q.rows, q.ptr<std::uint8_t>(), k, d.data(), labels.data());
            for (std::size_t i = 0; i < n; ++i) dist[i] = static_cast<float>(d[i]);
        } else {
            real->search(q.rows, q.ptr<float>(), k, dist.data(), labels.data());
            for (auto& v : dist) v = std::sqrt(std::max(v, 0.f));
        }
    }

    // Rows [first, first + n) into out (n rows of the index's layout).
    void reconstruct(idx_t first, idx_t n, cv::Mat& out, int row) const {
        if (n == 0) return;
        if (binary)
            // One by one: FAISS 1.7.3's IndexBinary::reconstruct_n steps through the output by
            // d (bits) instead of code_size (bytes) and writes past the buffer.
            for (idx_t i = 0; i < n; ++i) binary->reconstruct(first + i, out.ptr<std::uint8_t>(row + static_cast<int>(i)));
        else
            real->reconstruct_n(first, n, out.ptr<float>(row));
    }

    // Flat indexes only: drops labels [first, first + n); later labels shift down by n.
    void remove_range(idx_t first, idx_t n) const {
        if (n == 0) return;
        faiss::IDSelectorRange sel(first, first + n);
        const std::size_t removed = binary ? binary->remove_ids(sel) : real->remove_ids(sel);
        if (removed != static_cast<std::size_t>(n))
            throw Error(ErrorCode::internal, std::string(kName) + ": FAISS removed " + std::to_string(removed) +
                                                 " vectors instead of " + std::to_string(n));
    }

    std::vector<std::uint8_t> serialize() const {
        faiss::VectorIOWriter w;
        if (binary)
            faiss::write_index_binary(binary.get(), &w);
        else
            faiss::write_index(real.get(), &w);
        return std::move(w.data);
    }
};

struct Slot {
    std::string id;                   // empty once retired
    std::vector<cv::Point2f> points;  // keypoint position of each vector, by row
    idx_t first = 0;                  // FAISS label of the item's first vector
    std::uint32_t count = 0;          // vectors the item holds in FAISS
    bool alive = true;                // false: a tombstone (HNSW only)
};

class FaissIndex final : public sightline::Index {
public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description =
        "approximate kNN with FAISS (HNSW or flat; Hamming for binary, L2 for float descriptors) with Lowe's ratio test";
    static sightline::ConfigSchema config_schema() {
        static const std::array<ConfigKey, 8> keys{{
            {.name = "method", .type = ConfigType::string, .default_value = "hnsw", .choices = "hnsw|flat",
             .description = "hnsw: approximate graph search, fast on large galleries; flat: exact scan with real removal"},
            {.name = "ratio", .type = ConfigType::number, .default_value = "0.8", .min = 0.1, .max = 1.0,
             .description = "Lowe's ratio: keep a match if nearest < ratio x second nearest (1.0 keeps all)"},
            {.name = "max_distance", .type = ConfigType::number, .default_value = "0", .min = 0,
             .description = "drop matches farther than this (0: no limit); Hamming bits or L2"},
            {.name = "m", .type = ConfigType::integer, .default_value = "32", .min = 4, .max = 128,
             .description = "hnsw: graph links per vector (more: better recall, more memory, slower adds)"},
            {.name = "ef_construction", .type = ConfigType::integer, .default_value = "64", .min = 8, .max = 2048,
             .description = "hnsw: candidate list size while inserting (more: a better graph, slower adds)"},
            {.name = "ef_search", .type = ConfigType::integer, .default_value = "64", .min = 2, .max = 4096,
             .description = "hnsw: candidate list size per query descriptor (more: better recall, slower searches)"},
            {.name = "rebuild_share", .type = ConfigType::number, .default_value = "0.25", .min = 0.01, .max = 1.0,
             .description = "hnsw: rebuild the graph once removed or replaced vectors exceed this share of all stored"},
            {.name = "omp_threads", .type = ConfigType::integer, .default_value = "1", .min = 0, .max = 256,
             .description = "FAISS OpenMP threads per search, add or rebuild (1: the host's workers are the parallelism; "
                            "0: OpenMP's default)"},
        }};
        return keys;
    }

    explicit FaissIndex(sightline::Context& ctx)
        : log_(ctx.logger()),
          method_(ctx.config().get_string("method") == "flat" ? Method::flat : Method::hnsw),
          ratio_(static_cast<float>(ctx.config().get_double("ratio"))),
          max_distance_(static_cast<float>(ctx.config().get_double("max_distance"))),
          m_(static_cast<int>(ctx.config().get_int("m"))),
          ef_construction_(static_cast<int>(ctx.config().get_int("ef_construction"))),
          ef_search_(static_cast<int>(ctx.config().get_int("ef_search"))),
          rebuild_share_(ctx.config().get_double("rebuild_share")),
          omp_threads_(static_cast<int>(ctx.config().get_int("omp_threads"))) {
        const std::string method = ctx.config().get_string("method");
        if (method != "hnsw" && method != "flat")
            throw Error(ErrorCode::invalid_argument, ctx.config().where("method") + ": " +
                                                         ctx.config().key_path("method") +
                                                         ": expected hnsw or flat, found '" + method + "'");
    }

    void add(const std::string& id, const sightline::Features& f) override {
        const cv::Mat& d = f.descriptors;
        if (!d.empty()) check_descriptors(f, "item '" + id + "'");
        const cv::Mat dc = d.isContinuous() ? d : d.clone();

        auto lock = write_lock();
        OmpThreads omp(omp_threads_);
        auto old = by_id_.find(id);
        const bool replacing = old != by_id_.end();
        const std::size_t old_slot = replacing ? old->second : 0;
        const idx_t old_count = replacing ? slots_[old_slot].count : 0;
        bool old_retired = false;

        if (!d.empty() && !store_.empty() && (d.type() != type_ || d.cols != width_)) {
            if (live_vectors() - old_count > 0)
                throw Error(ErrorCode::invalid_argument,
                            std::string(kName) + ": item '" + id + "' has " + layout_name(d.type(), d.cols) +
                                " but this index holds " + layout_name(type_, width_) +
                                "; one index holds one descriptor type and width (a pipeline uses one features "
                                "plugin; recompute the gallery when changing it)");
            // Nothing else is live: start over with the new layout.
            if (replacing) {
                by_id_.erase(old);
                retire(old_slot);
                old_retired = true;
            }
            drop_store();
        }
        if (!d.empty() && store_.empty()) {
            store_ = guarded("creating the index", [&] {
                return Store::make(method_, d.type(), d.cols, m_, ef_construction_, ef_search_);
            });
            type_ = d.type();
            width_ = d.cols;
        }

        Slot slot;
        slot.id = id;
        slot.first = store_.ntotal();
        if (!d.empty()) {
            slot.points.reserve(f.keypoints.size());
            for (const auto& k : f.keypoints) slot.points.push_back(k.pt);
            try {
                guarded("adding item '" + id + "'", [&] { store_.add(dc); });
            } catch (...) {
                account_partial_add(slot.first);
                throw;
            }
            slot.count = static_cast<std::uint32_t>(d.rows);
        }
        slots_.push_back(std::move(slot));
        owner_.resize(owner_.size() + static_cast<std::size_t>(d.rows), static_cast<std::uint32_t>(slots_.size() - 1));

        if (replacing && !old_retired) {
            by_id_.erase(id);
            retire(old_slot);
        }
        by_id_[id] = slots_.size() - 1;  // the new slot is the last one, whatever retire() compacted
        maintain();
    }

    bool remove(const std::string& id) override {
        auto lock = write_lock();
        OmpThreads omp(omp_threads_);
        auto it = by_id_.find(id);
        if (it == by_id_.end()) return false;
        const std::size_t s = it->second;
        by_id_.erase(it);
        retire(s);
        maintain();
        return true;
    }

    std::vector<sightline::Candidate> search(const sightline::Features& query, std::size_t k) const override {
        const cv::Mat& q = query.descriptors;
        if (q.empty() || k == 0) return {};
        check_descriptors(query, "query");
        const cv::Mat qc = q.isContinuous() ? q : q.clone();

        auto lock = read_lock();
        if (store_.empty() || live_vectors() == 0) return {};
        if (q.type() != type_ || q.cols != width_)
            throw Error(ErrorCode::invalid_argument,
                        std::string(kName) + ": the query has " + layout_name(q.type(), q.cols) +
                            " but the index holds " + layout_name(type_, width_) +
                            "; query and gallery must come from the same features plugin");
        OmpThreads omp(omp_threads_);

        struct Best {
            float d1 = 0, d2 = 0;
            idx_t label = -1;
            int found = 0;  // live neighbours seen (0, 1 or 2)
        };
        const int nq = qc.rows;
        std::vector<Best> best(static_cast<std::size_t>(nq));
        const idx_t total = store_.ntotal();
        const idx_t live = live_vectors();
        // Without tombstones the two nearest are the answer. With them, ask for more and widen
        // the search for the rows whose nearest were mostly tombstones.
        constexpr idx_t kMaxK = 256;
        idx_t kk = std::min<idx_t>(dead_vectors_ == 0 ? 2 : 4, total);
        std::vector<int> pending(static_cast<std::size_t>(nq));
        for (int r = 0; r < nq; ++r) pending[static_cast<std::size_t>(r)] = r;
        std::vector<float> dist;
        std::vector<idx_t> labels;
        while (!pending.empty()) {
            cv::Mat sub;
            if (static_cast<int>(pending.size()) == nq) {
                sub = qc;
            } else {
                sub.create(static_cast<int>(pending.size()), qc.cols, qc.type());
                for (std::size_t i = 0; i < pending.size(); ++i) qc.row(pending[i]).copyTo(sub.row(static_cast<int>(i)));
            }
            guarded("searching", [&] { store_.search(sub, kk, dist, labels); });
            std::vector<int> again;
            for (std::size_t i = 0; i < pending.size(); ++i) {
                Best b;
                for (idx_t c = 0; c < kk && b.found < 2; ++c) {
                    const std::size_t at = i * static_cast<std::size_t>(kk) + static_cast<std::size_t>(c);
                    const idx_t label = labels[at];
                    if (label < 0 || label >= total) continue;
                    if (!slots_[owner_[static_cast<std::size_t>(label)]].alive) continue;
                    if (b.found == 0) {
                        b.d1 = dist[at];
                        b.label = label;
                    } else {
                        b.d2 = dist[at];
                    }
                    ++b.found;
                }
                const bool exhausted = kk >= total || kk >= kMaxK;
                if (b.found < 2 && b.found < live && !exhausted)
                    again.push_back(pending[i]);
                else
                    best[static_cast<std::size_t>(pending[i])] = b;
            }
            pending.swap(again);
            kk = std::min<idx_t>({kk * 4, total, kMaxK});
        }

        std::unordered_map<std::size_t, sightline::Candidate> by_slot;
        for (int r = 0; r < nq; ++r) {
            const Best& b = best[static_cast<std::size_t>(r)];
            if (b.found == 0) continue;
            // One live neighbour while more exist: the second was hidden by tombstones; without
            // it there is no ratio test, so the row is not trusted.
            if (b.found == 1 && live > 1) continue;
            if (max_distance_ > 0 && b.d1 > max_distance_) continue;
            if (b.found == 2 && b.d1 >= ratio_ * b.d2) continue;
            const std::size_t s = owner_[static_cast<std::size_t>(b.label)];
            const Slot& slot = slots_[s];
            auto& cand = by_slot[s];
            cand.id = slot.id;
            cand.correspondences.push_back({query.keypoints[static_cast<std::size_t>(r)].pt,
                                            slot.points[static_cast<std::size_t>(b.label - slot.first)], b.d1});
        }
        return sightline::rank_by_votes(by_slot, k);
    }

    std::size_t size() const override {
        auto lock = read_lock();
        return by_id_.size();
    }

    // Layout: magic, version, payload size, payload, FNV-1a of the payload. The checksum makes
    // any damage a clear error before FAISS parses a byte (a damaged HNSW graph would otherwise
    // be read "successfully" and crash a later search).
    void save(std::ostream& out) const override {
        std::ostringstream payload;
        {
            auto lock = read_lock();
            sightline::BinaryWriter w(payload);
            w.pod<std::uint8_t>(static_cast<std::uint8_t>(method_of_store()));
            w.pod<std::int32_t>(store_.empty() ? -1 : type_);
            w.pod<std::int32_t>(store_.empty() ? 0 : width_);
            w.pod<std::uint64_t>(static_cast<std::uint64_t>(dead_vectors_));
            w.pod<std::uint64_t>(slots_.size());
            for (const auto& s : slots_) {
                w.pod<std::uint8_t>(s.alive ? 1 : 0);
                w.string(s.id);
                w.pod<std::uint32_t>(s.count);
                if (s.alive)
                    for (const auto& p : s.points) {
                        w.pod(p.x);
                        w.pod(p.y);
                    }
            }
            std::vector<std::uint8_t> blob;
            if (!store_.empty()) blob = guarded("serialising the index", [&] { return store_.serialize(); });
            w.pod<std::uint64_t>(blob.size());
            w.bytes(blob.data(), blob.size());
        }
        const std::string bytes = std::move(payload).str();
        sightline::BinaryWriter w(out);
        w.bytes(kMagic, 4);
        w.pod<std::uint32_t>(kVersion);
        w.pod<std::uint64_t>(bytes.size());
        w.bytes(bytes.data(), bytes.size());
        w.pod<std::uint64_t>(sightline::fnv1a64(bytes.data(), bytes.size()));
        if (!out) throw Error(ErrorCode::unavailable, std::string(kName) + ": writing the snapshot failed");
    }

    void load(std::istream& in) override {
        sightline::BinaryReader r(in, "index-faiss snapshot");
        char magic[4];
        r.read(magic, 4);
        if (std::memcmp(magic, kMagic, 4) != 0) r.fail("not a FAISS index snapshot (bad magic)");
        const auto v = r.pod<std::uint32_t>();
        if (v != kVersion) r.fail("unsupported snapshot version " + std::to_string(v) + " (this plugin reads " +
                                  std::to_string(kVersion) + ")");
        const auto size = r.pod<std::uint64_t>();
        if (size > (std::uint64_t{1} << 40)) r.fail("payload of " + std::to_string(size) + " bytes is implausible");
        // Read in chunks, so a lying size ends in "truncated" rather than a huge allocation.
        std::string bytes;
        constexpr std::size_t chunk = 1 << 20;
        while (bytes.size() < size) {
            const std::size_t n = std::min<std::size_t>(chunk, static_cast<std::size_t>(size) - bytes.size());
            const std::size_t at = bytes.size();
            bytes.resize(at + n);
            r.read(bytes.data() + at, n);
        }
        if (r.pod<std::uint64_t>() != sightline::fnv1a64(bytes.data(), bytes.size()))
            r.fail("checksum mismatch (the snapshot is damaged)");

        std::istringstream payload(std::move(bytes));
        sightline::BinaryReader p(payload, "index-faiss snapshot");
        const auto method_byte = p.pod<std::uint8_t>();
        if (method_byte > 1) p.fail("unknown method " + std::to_string(method_byte));
        const auto method = static_cast<Method>(method_byte);
        const auto type = p.pod<std::int32_t>();
        const auto width = p.pod<std::int32_t>();
        if (type != -1 && type != CV_8U && type != CV_32F) p.fail("unknown descriptor type " + std::to_string(type));
        if (type != -1 && (width <= 0 || width > (1 << 16))) p.fail("implausible descriptor width");
        const auto dead = p.pod<std::uint64_t>();
        const auto nslots = p.pod<std::uint64_t>();
        if (nslots > (std::uint64_t{1} << 32)) p.fail("implausible item count");
        std::vector<Slot> slots;
        std::unordered_map<std::string, std::size_t> by_id;
        std::uint64_t total = 0, dead_sum = 0;
        for (std::uint64_t i = 0; i < nslots; ++i) {
            Slot s;
            const auto alive = p.pod<std::uint8_t>();
            if (alive > 1) p.fail("bad item flag");
            s.alive = alive == 1;
            s.id = p.string();
            s.count = p.pod<std::uint32_t>();
            if (s.count > (1u << 24)) p.fail("implausible vector count");
            s.first = static_cast<idx_t>(total);
            total += s.count;
            if (s.alive) {
                if (s.id.empty()) p.fail("an item without an id");
                if (!by_id.emplace(s.id, slots.size()).second) p.fail("item '" + s.id + "' appears twice");
                s.points.resize(s.count);
                for (auto& pt : s.points) {
                    pt.x = p.pod<float>();
                    pt.y = p.pod<float>();
                }
            } else {
                dead_sum += s.count;
            }
            slots.push_back(std::move(s));
        }
        if (dead_sum != dead) p.fail("tombstone count does not match the items");
        if (method == Method::flat && dead != 0) p.fail("a flat index with tombstones");
        const auto blob_size = p.pod<std::uint64_t>();
        if (blob_size > size) p.fail("index size is implausible");
        faiss::VectorIOReader reader;
        reader.data.resize(static_cast<std::size_t>(blob_size));
        if (blob_size) p.read(reader.data.data(), reader.data.size());
        if ((type == -1) != (blob_size == 0) || (blob_size == 0 && total != 0))
            p.fail("index presence does not match the items");
        if (payload.peek() != std::char_traits<char>::eof()) p.fail("trailing bytes after the index");

        Store store;
        if (blob_size) {
            try {
                guarded("reading the index", [&] {
                    if (type == CV_8U)
                        store.binary.reset(faiss::read_index_binary(&reader));
                    else
                        store.real.reset(faiss::read_index(&reader));
                });
            } catch (const Error& e) {
                p.fail(e.what());
            }
            const bool kind_ok =
                type == CV_8U
                    ? (method == Method::hnsw ? dynamic_cast<faiss::IndexBinaryHNSW*>(store.binary.get()) != nullptr
                                              : dynamic_cast<faiss::IndexBinaryFlat*>(store.binary.get()) != nullptr)
                    : (method == Method::hnsw ? dynamic_cast<faiss::IndexHNSWFlat*>(store.real.get()) != nullptr
                                              : dynamic_cast<faiss::IndexFlatL2*>(store.real.get()) != nullptr);
            if (!kind_ok) p.fail("the FAISS index is not of the recorded kind");
            const int d = store.binary ? store.binary->d : store.real->d;
            if (d != (type == CV_8U ? width * 8 : width)) p.fail("the FAISS index's dimension does not match");
            if (static_cast<std::uint64_t>(store.ntotal()) != total)
                p.fail("the FAISS index holds " + std::to_string(store.ntotal()) + " vectors, the items " +
                       std::to_string(total));
            if (auto* h = dynamic_cast<faiss::IndexBinaryHNSW*>(store.binary.get())) h->hnsw.efSearch = ef_search_;
            if (auto* h = dynamic_cast<faiss::IndexHNSWFlat*>(store.real.get())) h->hnsw.efSearch = ef_search_;
        }
        std::vector<std::uint32_t> owner(static_cast<std::size_t>(total));
        for (std::size_t s = 0; s < slots.size(); ++s)
            std::fill_n(owner.begin() + slots[s].first, slots[s].count, static_cast<std::uint32_t>(s));

        auto lock = write_lock();
        OmpThreads omp(omp_threads_);
        store_ = std::move(store);
        slots_ = std::move(slots);
        owner_ = std::move(owner);
        by_id_ = std::move(by_id);
        dead_vectors_ = static_cast<idx_t>(dead);
        type_ = type == -1 ? 0 : type;
        width_ = width;
        if (!store_.empty() && method != method_) {
            log_->info("{}: snapshot holds a {} index, the config asks for {}; rebuilding", kName, method_name(method),
                       method_name(method_));
            rebuild();
        }
        maintain();
    }

private:
    static constexpr char kMagic[4] = {'S', 'L', 'F', 'I'};
    static constexpr std::uint32_t kVersion = 1;

    // Writers are exclusive; searches share. An add, remove or load waits for the searches already
    // running to finish (they hold the shared lock), and while it waits, new searches queue behind
    // it at gate_, so a stream of searches cannot starve a writer and no search waits longer than
    // the running ones plus the change itself. An HNSW rebuild happens inside the write that
    // triggers it, so that write (and the searches queued behind it) takes as long as the rebuild.
    std::shared_lock<std::shared_mutex> read_lock() const {
        std::lock_guard gate(gate_);
        return std::shared_lock(rw_);
    }
    std::unique_lock<std::shared_mutex> write_lock() const {
        std::lock_guard gate(gate_);
        return std::unique_lock(rw_);
    }

    static void check_descriptors(const sightline::Features& f, const std::string& what) {
        const cv::Mat& d = f.descriptors;
        if (d.type() != CV_8U && d.type() != CV_32F)
            throw Error(ErrorCode::invalid_argument,
                        std::string(kName) + ": " + what + ": descriptors must be CV_8U (binary) or CV_32F (float), found type " +
                            std::to_string(d.type()));
        if (d.cols <= 0) throw Error(ErrorCode::invalid_argument, std::string(kName) + ": " + what + ": descriptors have no columns");
        if (f.keypoints.size() != static_cast<std::size_t>(d.rows))
            throw Error(ErrorCode::invalid_argument, std::string(kName) + ": " + what + ": " +
                                                         std::to_string(f.keypoints.size()) + " keypoints but " +
                                                         std::to_string(d.rows) + " descriptor rows");
    }

    idx_t live_vectors() const { return store_.ntotal() - dead_vectors_; }

    Method method_of_store() const {
        if (dynamic_cast<const faiss::IndexBinaryHNSW*>(store_.binary.get()) ||
            dynamic_cast<const faiss::IndexHNSWFlat*>(store_.real.get()))
            return Method::hnsw;
        if (store_.empty()) return method_;
        return Method::flat;
    }

    // After a failed FAISS add, labels FAISS kept anyway belong to a tombstone (HNSW) or are
    // dropped again (flat), so the label tables keep matching the index.
    void account_partial_add(idx_t first) noexcept {
        try {
            const idx_t extra = store_.ntotal() - first;
            if (extra <= 0) return;
            if (method_of_store() == Method::flat) {
                store_.remove_range(first, extra);
                return;
            }
            Slot dead;
            dead.alive = false;
            dead.first = first;
            dead.count = static_cast<std::uint32_t>(extra);
            slots_.push_back(std::move(dead));
            owner_.resize(owner_.size() + static_cast<std::size_t>(extra), static_cast<std::uint32_t>(slots_.size() - 1));
            dead_vectors_ += extra;
        } catch (...) {
            // Nothing better to do: the next rebuild or load starts from consistent tables.
        }
    }

    // Takes slot s out of the live set; by_id_ no longer names it. HNSW: a tombstone. Flat: its
    // vectors leave FAISS, the slot is erased and every later label and slot index shifts down.
    void retire(std::size_t s) {
        Slot& slot = slots_[s];
        if (method_of_store() == Method::hnsw && !store_.empty()) {
            slot.alive = false;
            slot.id.clear();
            slot.points = {};
            dead_vectors_ += slot.count;
            return;
        }
        const idx_t first = slot.first, count = slot.count;
        if (count > 0) guarded("removing vectors", [&] { store_.remove_range(first, count); });
        owner_.erase(owner_.begin() + first, owner_.begin() + first + count);
        slots_.erase(slots_.begin() + static_cast<std::ptrdiff_t>(s));
        for (auto& o : owner_)
            if (o > s) --o;
        for (std::size_t i = s; i < slots_.size(); ++i) slots_[i].first -= count;
        for (auto& [_, v] : by_id_)
            if (v > s) --v;
    }

    // No FAISS index (nothing holds vectors); tombstones go, live items without vectors stay.
    void drop_store() {
        store_ = Store{};
        std::vector<Slot> kept;
        for (auto& s : slots_)
            if (s.alive) {
                s.first = 0;
                s.count = 0;
                s.points = {};
                kept.push_back(std::move(s));
            }
        slots_ = std::move(kept);
        owner_.clear();
        dead_vectors_ = 0;
        by_id_.clear();
        for (std::size_t i = 0; i < slots_.size(); ++i) by_id_[slots_[i].id] = i;
    }

    // After every change: no vectors left → no index (so the next add may bring another
    // descriptor type); too many tombstones → rebuild.
    void maintain() {
        if (store_.empty()) return;
        if (live_vectors() == 0) {
            drop_store();
            return;
        }
        if (dead_vectors_ > 0 &&
            static_cast<double>(dead_vectors_) > rebuild_share_ * static_cast<double>(store_.ntotal()))
            rebuild();
    }

    // A fresh index of the configured method from the live vectors, tables compacted. The old
    // index stays in place if anything fails.
    void rebuild() {
        const idx_t live = live_vectors();
        cv::Mat all(static_cast<int>(live), width_, type_);
        std::vector<Slot> slots;
        std::vector<std::uint32_t> owner;
        owner.reserve(static_cast<std::size_t>(live));
        int row = 0;
        guarded("rebuilding the index", [&] {
            for (auto& s : slots_) {
                if (!s.alive) continue;
                store_.reconstruct(s.first, s.count, all, row);
                Slot n;
                n.id = s.id;
                n.points = s.points;
                n.first = row;
                n.count = s.count;
                owner.resize(owner.size() + s.count, static_cast<std::uint32_t>(slots.size()));
                slots.push_back(std::move(n));
                row += static_cast<int>(s.count);
            }
            Store fresh = Store::make(method_, type_, width_, m_, ef_construction_, ef_search_);
            if (live > 0) fresh.add(all);
            store_ = std::move(fresh);
        });
        log_->debug("{}: rebuilt the {} index from {} live vectors ({} tombstones dropped)", kName,
                    method_name(method_), live, dead_vectors_);
        slots_ = std::move(slots);
        owner_ = std::move(owner);
        dead_vectors_ = 0;
        by_id_.clear();
        for (std::size_t i = 0; i < slots_.size(); ++i) by_id_[slots_[i].id] = i;
    }

    std::shared_ptr<spdlog::logger> log_;
    const Method method_;
    const float ratio_;
    const float max_distance_;
    const int m_, ef_construction_, ef_search_;
    const double rebuild_share_;
    const int omp_threads_;

    mutable std::mutex gate_;
    mutable std::shared_mutex rw_;
    // Guarded by rw_.
    Store store_;
    int type_ = 0, width_ = 0;     // the layout of store_'s vectors (meaningful while store_ exists)
    std::vector<Slot> slots_;      // every item, live or tombstone, in label order
    std::vector<std::uint32_t> owner_;  // FAISS label → slot
    std::unordered_map<std::string, std::size_t> by_id_;  // live items
    idx_t dead_vectors_ = 0;       // vectors of tombstones, still in FAISS
};

}  // namespace

SIGHTLINE_PLUGIN(index, "faiss", FaissIndex)
