// index-vocab: an inverted file over the visual words of a trained vocabulary (sightline/vocabulary.hpp),
// tf-idf scoring, Hamming-embedding checks on word matches, and the keypoint position kept in every
// posting so the host's RANSAC verification gets word correspondences without any descriptor in
// memory. Cost per query grows with the posting lists it reads, not with the gallery.
//
// Scoring. An item d is the bag of its words with weights tf_d(w)·idf(w), idf from the training
// images; its norm ‖d‖ = sqrt(Σ_w (tf_d(w)·idf(w))²) (the L2 normalisation of Nistér and Stewénius;
// we measured it against none and L1 on the scale bench, see docs/indexes.md). A query feature f in
// word w meets each posting p of w; the pair counts if the Hamming distance h of their embedding
// signatures is at most `hamming_threshold`, with weight idf(w)²·exp(−(h/threshold)²). Each query
// feature counts at most once per item (its closest posting), so a repeated texture in the item
// cannot outvote a real object (burstiness). score(d) = Σ weights / (‖q‖·‖d‖).
//
// Concurrency. Posting lists are split over stripes, each with its own shared_mutex: a search holds
// one stripe's lock while it reads one word's list, never the whole index; an add takes each stripe
// it touches exclusively for the time of its appends. The item table has its own lock, taken by a
// search only at the end, to drop removed items and name the winners.
#include <opencv2/core.hpp>
#include <sightline/plugin.hpp>
#include <sightline/serialize.hpp>
#include <sightline/vocabulary.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numeric>
#include <shared_mutex>
#include <unordered_map>

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;
using sightline::Error;
using sightline::ErrorCode;

// A posting as snapshots hold it, 16 bytes: the item, the keypoint at 1/4 px (up to 16383 px),
// the 64-bit embedding signature.
struct Posting {
    std::uint32_t item;
    std::uint16_t x4, y4;
    std::uint64_t sig;
};
static_assert(sizeof(Posting) == 16);

// A word's postings in memory, in item order, as two arrays: a search reads every signature but
// the rest only of the few that pass, so the signatures are kept together (half the bytes read).
struct Where {
    std::uint32_t item;
    std::uint16_t x4, y4;
};
struct PostingList {
    std::vector<std::uint64_t> sigs;
    std::vector<Where> where;
    std::size_t size() const { return sigs.size(); }
    bool empty() const { return sigs.empty(); }
    void push_back(const Posting& p) {
        // Grow by a quarter, not double: lists are most of the memory.
        if (sigs.size() == sigs.capacity()) {
            sigs.reserve(sigs.size() + sigs.size() / 4 + 4);
            where.reserve(sigs.capacity());
        }
        sigs.push_back(p.sig);
        where.push_back({p.item, p.x4, p.y4});
    }
    Posting operator[](std::size_t i) const {
        return {where[i].item, where[i].x4, where[i].y4, sigs[i]};
    }
};
constexpr int kBits = sightline::Vocabulary::kSignatureBits;

struct ItemEntry {
    std::string id;
    float norm = 0;
    std::uint32_t postings = 0;
    bool alive = true;
};

constexpr std::size_t kStripes = 64;
constexpr int kMatchItemWords = 3;  // words looked up per query feature by match_item

std::uint16_t quarter_px(float v) {
    return static_cast<std::uint16_t>(std::clamp(std::lround(v * 4.0f), 0L, 65535L));
}

class VocabIndex final : public sightline::Index {
public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description =
        "inverted file over a trained visual vocabulary: tf-idf, Hamming embedding, word correspondences";
    static sightline::ConfigSchema config_schema() {
        static const std::array<ConfigKey, 8> keys{{
            {.name = "vocabulary", .type = ConfigType::string, .required = true,
             .description = "key of the vocabulary file (made by `sightline vocab train`) in `storage`"},
            {.name = "storage", .type = ConfigType::string, .default_value = "vocab",
             .description = "named storage (storages: section) holding the vocabulary"},
            {.name = "hamming_threshold", .type = ConfigType::integer, .default_value = "20", .min = 0, .max = 64,
             .description = "a word match counts only if its 64-bit embedding signatures differ in at most this many bits (64: off)"},
            {.name = "max_features", .type = ConfigType::integer, .default_value = "0", .min = 0, .max = 1e6,
             .description = "index only the N strongest features of an item (0: all); bounds memory per item"},
            {.name = "max_matches_per_feature", .type = ConfigType::integer, .default_value = "0", .min = 0, .max = 1e9,
             .description = "skip a query word whose list has more postings than this (0: no limit); stop words cost time and say little"},
            {.name = "compact_share", .type = ConfigType::number, .default_value = "0.25", .min = 0.01, .max = 1,
             .description = "postings of removed items are purged once they are this share of all postings"},
            {.name = "max_correspondences", .type = ConfigType::integer, .default_value = "500", .min = 4, .max = 1e6,
             .description = "word correspondences passed to verification per candidate, closest first"},
            {.name = "query_words", .type = ConfigType::integer, .default_value = "1", .min = 1, .max = 16,
             .description = "words looked up per query feature: its own and the nearest neighbouring leaves (multiple assignment)"},
        }};
        return keys;
    }

    explicit VocabIndex(sightline::Context& ctx)
        : log_(ctx.logger()),
          threshold_(static_cast<int>(ctx.config().get_int("hamming_threshold"))),
          max_features_(static_cast<std::size_t>(ctx.config().get_int("max_features"))),
          max_list_(static_cast<std::size_t>(ctx.config().get_int("max_matches_per_feature"))),
          compact_share_(ctx.config().get_double("compact_share")),
          max_corr_(static_cast<std::size_t>(ctx.config().get_int("max_correspondences"))),
          query_words_(static_cast<int>(ctx.config().get_int("query_words"))) {
        const std::string key = ctx.config().get_string("vocabulary");
        const std::string storage_name = ctx.config().get_string("storage");
        auto storage = ctx.storage(storage_name);
        auto bytes = storage->get(key);
        if (!bytes)
            throw Error(ErrorCode::not_found, "vocabulary '" + key + "' is not in storage '" + storage_name +
                                                  "'; train one with `sightline vocab train --out " + key + "`");
        vocab_ = sightline::Vocabulary::parse(*bytes, "vocabulary '" + key + "' in storage '" + storage_name + "'");
        vocab_id_ = sightline::fnv1a64(bytes->data(), bytes->size());
        const std::string want = ctx.features_signature();
        if (!want.empty() && want != vocab_.signature())
            throw Error(ErrorCode::invalid_argument,
                        "vocabulary '" + key + "' was trained for the extractor '" + vocab_.signature() +
                            "' but this pipeline's features are '" + want +
                            "'; its words mean nothing for other descriptors: retrain it with `sightline vocab train` "
                            "for this pipeline, or use the features it was trained for");
        lists_.resize(vocab_.words());
        idf2_.resize(vocab_.words());
        for (std::uint32_t w = 0; w < vocab_.words(); ++w) idf2_[w] = vocab_.idf(w) * vocab_.idf(w);
        // exp(-(h/threshold)^2) for every possible distance, once, off the search path.
        const double inv_t2 = threshold_ > 0 ? 1.0 / (static_cast<double>(threshold_) * threshold_) : 1.0;
        for (int h = 0; h <= kBits; ++h)
            he_weight_[static_cast<std::size_t>(h)] = std::exp(-h * h * inv_t2);
        log_->info("vocabulary '{}': {} words (branching {}, depth {}), trained for '{}'", key, vocab_.words(),
                   vocab_.branching(), vocab_.depth(), vocab_.signature());
    }

    void add(const std::string& id, const sightline::Features& f) override {
        vocab_.check_compatible(f.descriptors);
        if (!f.descriptors.empty() && static_cast<std::size_t>(f.descriptors.rows) != f.keypoints.size())
            throw Error(ErrorCode::invalid_argument, "index-vocab: " + std::to_string(f.keypoints.size()) +
                                                         " keypoints but " + std::to_string(f.descriptors.rows) +
                                                         " descriptors");
        // Quantise outside every lock: it is most of an add's work.
        std::vector<int> rows(f.keypoints.size());
        std::iota(rows.begin(), rows.end(), 0);
        if (max_features_ > 0 && rows.size() > max_features_) {
            std::nth_element(rows.begin(), rows.begin() + static_cast<std::ptrdiff_t>(max_features_), rows.end(),
                             [&](int a, int b) {
                                 return f.keypoints[static_cast<std::size_t>(a)].response >
                                        f.keypoints[static_cast<std::size_t>(b)].response;
                             });
            rows.resize(max_features_);
            std::sort(rows.begin(), rows.end());
        }
        struct Pending {
            std::uint32_t word;
            Posting p;
        };
        std::vector<Pending> pending;
        pending.reserve(rows.size());
        std::unordered_map<std::uint32_t, std::uint32_t> tf;
        const cv::Mat proj = vocab_.projections(f.descriptors);
        for (int r : rows) {
            const std::uint8_t* row = f.descriptors.ptr(r);
            const std::uint32_t w = vocab_.quantize_row(row);
            const auto& pt = f.keypoints[static_cast<std::size_t>(r)].pt;
            pending.push_back({w, Posting{0, quarter_px(pt.x), quarter_px(pt.y),
                                          vocab_.embed(f.descriptors, proj, r, w)}});
            ++tf[w];
        }
        double norm2 = 0;
        for (const auto& [w, n] : tf) norm2 += static_cast<double>(n) * n * idf2_[w];
        std::sort(pending.begin(), pending.end(), [](const Pending& a, const Pending& b) {
            return a.word % kStripes != b.word % kStripes ? a.word % kStripes < b.word % kStripes : a.word < b.word;
        });

        std::lock_guard writer(write_mutex_);
        std::uint32_t item;
        {
            std::unique_lock lock(items_mutex_);
            if (auto it = by_id_.find(id); it != by_id_.end()) retire(it->second);
            item = static_cast<std::uint32_t>(items_.size());
            items_.push_back(ItemEntry{id, static_cast<float>(std::sqrt(norm2)),
                                       static_cast<std::uint32_t>(pending.size()), true});
            by_id_[id] = item;
        }
        for (std::size_t i = 0; i < pending.size();) {
            const std::size_t stripe = pending[i].word % kStripes;
            std::unique_lock lock(stripes_[stripe]);
            for (; i < pending.size() && pending[i].word % kStripes == stripe; ++i) {
                Posting p = pending[i].p;
                p.item = item;
                lists_[pending[i].word].push_back(p);
            }
        }
        live_postings_ += pending.size();
        maybe_compact();
    }

    bool remove(const std::string& id) override {
        std::lock_guard writer(write_mutex_);
        {
            std::unique_lock lock(items_mutex_);
            auto it = by_id_.find(id);
            if (it == by_id_.end()) return false;
            retire(it->second);
        }
        maybe_compact();
        return true;
    }

    std::vector<sightline::Candidate> search(const sightline::Features& query, std::size_t k) const override {
        const cv::Mat& q = query.descriptors;
        if (q.empty() || k == 0) return {};
        vocab_.check_compatible(q);
        std::size_t n_items;
        {
            std::shared_lock lock(items_mutex_);
            n_items = items_.size();
        }
        if (n_items == 0) return {};

        // Each query feature in its word and the nearest neighbouring words (multiple assignment).
        std::vector<std::uint32_t> words;
        std::unordered_map<std::uint32_t, std::uint32_t> tf;
        struct QF {
            std::uint32_t word;
            std::uint64_t sig;
        };
        std::vector<std::vector<QF>> per_row(static_cast<std::size_t>(q.rows));
        const cv::Mat proj = vocab_.projections(q);
        for (int r = 0; r < q.rows; ++r) {
            words.clear();
            vocab_.quantize_near(q.ptr(r), query_words_, words);
            ++tf[words.front()];
            for (auto w : words)
                per_row[static_cast<std::size_t>(r)].push_back({w, vocab_.embed(q, proj, r, w)});
        }
        double qnorm2 = 0;
        for (const auto& [w, n] : tf) qnorm2 += static_cast<double>(n) * n * idf2_[w];

        struct Hit {
            std::uint32_t item;
            int row;  // query feature
            std::uint16_t x4, y4;
            std::uint8_t h;
        };
        std::vector<float> score(n_items, 0.0f);
        // Per item, the query feature that last scored for it and with what weight: a feature
        // counts once per item, with its best match over all its words.
        std::vector<int> stamp(n_items, -1);
        std::vector<float> best_weight(n_items, 0.0f);
        std::vector<Hit> hits;
        hits.reserve(4096);
        for (int r = 0; r < q.rows; ++r) {
            for (const QF& f : per_row[static_cast<std::size_t>(r)]) {
                const std::uint32_t w = f.word;
                std::shared_lock lock(stripes_[w % kStripes]);
                const auto& list = lists_[w];
                if (list.empty() || (max_list_ > 0 && list.size() > max_list_)) continue;
                // The list is in item order, so one item's postings are adjacent: keep the
                // closest per item for this query feature. Most postings fail the signature test,
                // so that is the only branch on the common path.
                const int t = threshold_;
                const std::uint64_t sig = f.sig;
                std::uint32_t run_item = UINT32_MAX;
                int run_h = 0;
                std::size_t run_at = 0;
                const auto credit = [&] {
                    const std::uint32_t item = run_item;
                    if (item == UINT32_MAX || item >= n_items) return;
                    const float weight =
                        static_cast<float>(idf2_[w] * he_weight_[static_cast<std::size_t>(run_h)]);
                    if (stamp[item] != r) {
                        stamp[item] = r;
                        best_weight[item] = weight;
                        score[item] += weight;
                    } else if (weight > best_weight[item]) {
                        score[item] += weight - best_weight[item];
                        best_weight[item] = weight;
                    }
                    const Where& at = list.where[run_at];
                    hits.push_back({item, r, at.x4, at.y4, static_cast<std::uint8_t>(run_h)});
                };
                const std::uint64_t* sigs = list.sigs.data();
                const Where* where = list.where.data();
                for (std::size_t i = 0, n = list.size(); i < n; ++i) {
                    const int h = __builtin_popcountll(sigs[i] ^ sig);
                    if (h > t) continue;
                    if (where[i].item != run_item) {
                        credit();
                        run_item = where[i].item;
                        run_h = h;
                        run_at = i;
                    } else if (h < run_h) {
                        run_h = h;
                        run_at = i;
                    }
                }
                credit();
            }
        }

        // Rank, dropping removed items; the item lock only for this step.
        std::vector<std::uint32_t> touched;
        for (const auto& h : hits)
            if (score[h.item] > 0) {
                touched.push_back(h.item);
                score[h.item] = -score[h.item];  // mark as collected
            }
        for (auto t : touched) score[t] = -score[t];
        std::vector<std::pair<float, std::uint32_t>> ranked;
        std::vector<std::string> names;
        {
            std::shared_lock lock(items_mutex_);
            for (auto t : touched) {
                if (t >= items_.size()) continue;  // a load() replaced the table meanwhile
                const ItemEntry& e = items_[t];
                if (!e.alive || e.norm <= 0) continue;
                ranked.push_back({static_cast<float>(score[t] / (e.norm * std::sqrt(qnorm2))), t});
            }
            const std::size_t keep = std::min(k, ranked.size());
            std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(keep), ranked.end(),
                              [&](const auto& x, const auto& y) {
                                  return x.first != y.first ? x.first > y.first : items_[x.second].id < items_[y.second].id;
                              });
            ranked.resize(keep);
            for (const auto& r : ranked) names.push_back(items_[r.second].id);
        }
        std::unordered_map<std::uint32_t, std::size_t> slot;
        std::vector<sightline::Candidate> out(ranked.size());
        for (std::size_t i = 0; i < ranked.size(); ++i) {
            slot[ranked[i].second] = i;
            out[i].id = names[i];
            out[i].score = ranked[i].first;
        }
        // Correspondences, closest first; one query feature per gallery keypoint (a keypoint that
        // many query points claim would fake inliers).
        std::vector<std::vector<const Hit*>> per(out.size());
        for (const auto& h : hits)
            if (auto it = slot.find(h.item); it != slot.end()) per[it->second].push_back(&h);
        for (std::size_t i = 0; i < out.size(); ++i) {
            auto& v = per[i];
            std::stable_sort(v.begin(), v.end(), [](const Hit* a, const Hit* b) { return a->h < b->h; });
            // One-to-one, closest signatures first: a query feature met through several words,
            // or several query features on one gallery keypoint, would fake inliers.
            std::unordered_map<std::uint32_t, bool> used, used_row;
            for (const Hit* h : v) {
                if (out[i].correspondences.size() >= max_corr_) break;
                const std::uint32_t key = (static_cast<std::uint32_t>(h->x4) << 16) | h->y4;
                if (used.count(key) || used_row.count(static_cast<std::uint32_t>(h->row))) continue;
                used.emplace(key, true);
                used_row.emplace(static_cast<std::uint32_t>(h->row), true);
                out[i].correspondences.push_back({query.keypoints[static_cast<std::size_t>(h->row)].pt,
                                                  cv::Point2f(h->x4 / 4.0f, h->y4 / 4.0f), static_cast<float>(h->h)});
            }
        }
        return out;
    }

    bool can_match_item() const override { return true; }

    // Every word match of the query with the one item, whatever the signature distance: the caller
    // keeps those that land where the item's feature is, a stronger test than any threshold.
    std::vector<sightline::Correspondence> match_item(
        const std::string& id, const sightline::Features& query) const override {
        const cv::Mat& q = query.descriptors;
        if (q.empty() || static_cast<std::size_t>(q.rows) != query.keypoints.size()) return {};
        vocab_.check_compatible(q);
        std::uint32_t item;
        {
            std::shared_lock lock(items_mutex_);
            auto it = by_id_.find(id);
            if (it == by_id_.end()) return {};
            item = it->second;
        }
        std::vector<sightline::Correspondence> out;
        std::vector<std::uint32_t> words;
        const auto by_item = [](const Where& p, std::uint32_t i) { return p.item < i; };
        const cv::Mat proj = vocab_.projections(q);
        for (int r = 0; r < q.rows; ++r) {
            words.clear();
            // Neighbouring words too: in the item's frame a feature's match is a few pixels away,
            // so position, not the word, is what keeps chance matches out.
            vocab_.quantize_near(q.ptr(r), kMatchItemWords, words);
            for (const auto w : words) {
                const std::uint64_t sig = vocab_.embed(q, proj, r, w);
                std::shared_lock lock(stripes_[w % kStripes]);
                const auto& list = lists_[w];
                // Lists are in item order (items are numbered as added; compaction keeps order).
                const auto first =
                    std::lower_bound(list.where.begin(), list.where.end(), item, by_item);
                for (auto i = static_cast<std::size_t>(first - list.where.begin());
                     i < list.size() && list.where[i].item == item; ++i)
                    out.push_back({query.keypoints[static_cast<std::size_t>(r)].pt,
                                   cv::Point2f(list.where[i].x4 / 4.0f, list.where[i].y4 / 4.0f),
                                   static_cast<float>(__builtin_popcountll(list.sigs[i] ^ sig))});
            }
        }
        return out;
    }

    std::size_t size() const override {
        std::shared_lock lock(items_mutex_);
        return by_id_.size();
    }

    void save(std::ostream& out) const override {
        std::lock_guard writer(write_mutex_);  // a consistent picture; searches go on
        sightline::BinaryWriter w(out);
        w.bytes(kMagic, 4);
        w.pod<std::uint32_t>(kVersion);
        w.pod<std::uint64_t>(vocab_id_);
        w.pod<std::uint32_t>(vocab_.words());
        // Live items only, renumbered densely.
        std::vector<std::uint32_t> remap(items_.size(), UINT32_MAX);
        std::uint32_t n = 0;
        for (std::size_t i = 0; i < items_.size(); ++i)
            if (items_[i].alive) remap[i] = n++;
        w.pod<std::uint32_t>(n);
        for (const auto& e : items_)
            if (e.alive) {
                w.string(e.id);
                w.pod(e.norm);
                w.pod(e.postings);
            }
        std::vector<Posting> buf;
        for (std::uint32_t word = 0; word < vocab_.words(); ++word) {
            std::shared_lock lock(stripes_[word % kStripes]);
            buf.clear();
            const auto& list = lists_[word];
            for (std::size_t i = 0; i < list.size(); ++i)
                if (const Posting p = list[i]; remap[p.item] != UINT32_MAX)
                    buf.push_back({remap[p.item], p.x4, p.y4, p.sig});
            w.pod<std::uint32_t>(static_cast<std::uint32_t>(buf.size()));
            if (!buf.empty()) w.bytes(buf.data(), buf.size() * sizeof(Posting));
        }
        w.bytes(kMagic, 4);  // trailer: a cut-off snapshot is caught even at a list boundary
        if (!out) throw Error(ErrorCode::unavailable, "index-vocab: writing the snapshot failed");
    }

    void load(std::istream& in) override {
        sightline::BinaryReader r(in, "index-vocab snapshot");
        char magic[4];
        r.read(magic, 4);
        if (std::memcmp(magic, kMagic, 4) != 0) r.fail("not an index-vocab snapshot (bad magic)");
        if (auto v = r.pod<std::uint32_t>(); v != kVersion) r.fail("unsupported snapshot version " + std::to_string(v));
        if (r.pod<std::uint64_t>() != vocab_id_ || r.pod<std::uint32_t>() != vocab_.words())
            r.fail("made with another vocabulary than the one configured");
        const auto n = r.pod<std::uint32_t>();
        std::vector<ItemEntry> items;
        std::unordered_map<std::string, std::uint32_t> by_id;
        items.reserve(std::min<std::uint32_t>(n, 1u << 24));
        std::size_t live = 0;
        for (std::uint32_t i = 0; i < n; ++i) {
            ItemEntry e;
            e.id = r.string(4096);
            e.norm = r.pod<float>();
            e.postings = r.pod<std::uint32_t>();
            live += e.postings;
            if (!by_id.emplace(e.id, i).second) r.fail("item '" + e.id + "' appears twice");
            items.push_back(std::move(e));
        }
        std::vector<PostingList> lists(vocab_.words());
        std::vector<Posting> buf;
        std::size_t seen = 0;
        for (auto& list : lists) {
            const auto m = r.pod<std::uint32_t>();
            if (m > live - std::min(live, seen)) r.fail("a posting list is longer than the items' postings");
            buf.resize(m);
            if (m) r.read(buf.data(), m * sizeof(Posting));
            list.sigs.reserve(m);
            list.where.reserve(m);
            for (const auto& p : buf) {
                if (p.item >= n) r.fail("a posting names item " + std::to_string(p.item) + " of " + std::to_string(n));
                list.sigs.push_back(p.sig);
                list.where.push_back({p.item, p.x4, p.y4});
            }
            seen += m;
        }
        r.read(magic, 4);
        if (std::memcmp(magic, kMagic, 4) != 0) r.fail("trailer missing (truncated snapshot)");
        std::lock_guard writer(write_mutex_);
        std::unique_lock items_lock(items_mutex_);
        std::vector<std::unique_lock<std::shared_mutex>> locks;
        for (auto& s : stripes_) locks.emplace_back(s);
        items_ = std::move(items);
        by_id_ = std::move(by_id);
        lists_ = std::move(lists);
        live_postings_ = seen;
        dead_postings_ = 0;
    }

private:
    static constexpr char kMagic[4] = {'S', 'L', 'V', 'I'};
    static constexpr std::uint32_t kVersion = 2;  // 2: 64-bit signatures

    // Caller holds write_mutex_ and items_mutex_ exclusively.
    void retire(std::uint32_t item) {
        ItemEntry& e = items_[item];
        e.alive = false;
        by_id_.erase(e.id);
        live_postings_ -= e.postings;
        dead_postings_ += e.postings;
    }

    // Caller holds write_mutex_. Purges removed items' postings stripe by stripe, so a search waits
    // at most for one stripe's rewrite.
    void maybe_compact() {
        const std::size_t total = live_postings_ + dead_postings_;
        if (dead_postings_ == 0 || static_cast<double>(dead_postings_) < compact_share_ * static_cast<double>(total))
            return;
        std::vector<bool> alive(items_.size());
        {
            std::shared_lock lock(items_mutex_);
            for (std::size_t i = 0; i < items_.size(); ++i) alive[i] = items_[i].alive;
        }
        for (std::size_t s = 0; s < kStripes; ++s) {
            std::unique_lock lock(stripes_[s]);
            for (std::size_t w = s; w < lists_.size(); w += kStripes) {
                auto& list = lists_[w];
                std::size_t kept = 0;
                for (std::size_t i = 0; i < list.size(); ++i)
                    if (alive[list.where[i].item]) {
                        list.sigs[kept] = list.sigs[i];
                        list.where[kept++] = list.where[i];
                    }
                list.sigs.resize(kept);
                list.where.resize(kept);
                if (list.sigs.capacity() > kept + kept / 4 + 8) {
                    list.sigs.shrink_to_fit();
                    list.where.shrink_to_fit();
                }
            }
        }
        log_->debug("compacted: {} postings of removed items purged", dead_postings_);
        dead_postings_ = 0;
        // Item slots stay (postings refer to them by number); a removed slot is a few bytes.
    }

    std::shared_ptr<spdlog::logger> log_;
    int threshold_;
    std::size_t max_features_;
    std::size_t max_list_;
    double compact_share_;
    std::size_t max_corr_;
    int query_words_;
    sightline::Vocabulary vocab_;
    std::uint64_t vocab_id_ = 0;
    std::vector<float> idf2_;
    std::array<double, kBits + 1> he_weight_{};  // by signature distance

    mutable std::mutex write_mutex_;  // one writer at a time
    mutable std::shared_mutex items_mutex_;
    std::vector<ItemEntry> items_;
    std::unordered_map<std::string, std::uint32_t> by_id_;
    mutable std::array<std::shared_mutex, kStripes> stripes_;
    std::vector<PostingList> lists_;
    std::size_t live_postings_ = 0, dead_postings_ = 0;  // under write_mutex_
};

}  // namespace

SIGHTLINE_PLUGIN(index, "vocab", VocabIndex)
