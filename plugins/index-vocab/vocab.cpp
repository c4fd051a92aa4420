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
// cannot outvote a real object (burstiness). score(d) = Σ weights / (‖q‖·‖d‖). The best
// `geometry_rerank` items are then scored again by the matches that agree on one similarity
// (rescore_geometry), for which every posting also keeps its keypoint's orientation and size.
//
// Concurrency. Posting lists are split over stripes, each with its own shared_mutex: a search holds
// one stripe's lock while it reads one word's list, never the whole index; an add takes each stripe
// it touches exclusively for the time of its appends. The item table has its own lock, taken by a
// search only at the end, to drop removed items and name the winners.
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
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
#include <span>
#include <unordered_map>

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;
using sightline::Error;
using sightline::ErrorCode;

// A posting as snapshots hold it, 16 bytes: the item, the keypoint at 1/4 px (up to 16383 px),
// the 64-bit embedding signature; its orientation and scale (Geo) follow the list apart.
struct Posting {
    std::uint32_t item;
    std::uint16_t x4, y4;
    std::uint64_t sig;
};
static_assert(sizeof(Posting) == 16);

// A keypoint's orientation in 1/256 turns and its size as log2 in 1/16 octaves: what weak
// geometric consistency compares (a photo turns and scales all of an item's features alike).
struct Geo {
    std::uint8_t angle = 0, scale = 0;
};
static_assert(sizeof(Geo) == 2);

Geo geo_of(const cv::KeyPoint& kp) {
    Geo g;
    if (kp.angle >= 0) g.angle = static_cast<std::uint8_t>(std::lround(kp.angle * (256.0 / 360.0)) & 255);
    g.scale = static_cast<std::uint8_t>(std::clamp(std::lround(std::log2(std::max(kp.size, 1.0f)) * 16.0), 0L, 255L));
    return g;
}

// A word's postings in memory, in item order, as three arrays: a search reads every signature but
// the rest only of the few that pass, so the signatures are kept together (8 of 18 bytes read).
struct Where {
    std::uint32_t item;
    std::uint16_t x4, y4;
};
struct PostingList {
    std::vector<std::uint64_t> sigs;
    std::vector<Where> where;
    std::vector<Geo> geo;
    std::size_t size() const { return sigs.size(); }
    bool empty() const { return sigs.empty(); }
    void reserve(std::size_t n) {
        sigs.reserve(n);
        where.reserve(n);
        geo.reserve(n);
    }
    void push_back(const Posting& p, Geo g) {
        // Grow by an eighth, not double: lists are most of the memory.
        if (sigs.size() == sigs.capacity()) reserve(sigs.size() + sigs.size() / 8 + 4);
        sigs.push_back(p.sig);
        where.push_back({p.item, p.x4, p.y4});
        geo.push_back(g);
    }
    Posting operator[](std::size_t i) const {
        return {where[i].item, where[i].x4, where[i].y4, sigs[i]};
    }
};
constexpr int kBits = sightline::Vocabulary::kSignatureBits;

// A query feature's best posting in one item for one of its words.
struct Hit {
    std::uint32_t item;
    int row;  // query feature
    std::uint16_t x4, y4;
    std::uint8_t h;  // signature distance
    Geo g;
    float weight;  // idf² · Hamming weight
};

// Weak geometric consistency (Jégou, Douze and Schmid, ECCV 2008), extended with position as in
// Lowe's Hough voting (IJCV 2004): the word matches of a true item agree on one similarity
// transform, a chance item's spread over all of them. First a (rotation, log-scale change)
// histogram, 16 bins of 22.5° by 64 of half an octave, whose densest window of 2×2 bins (45°, one
// octave; sliding, so no peak is cut in two by a bin edge) gives the matches that turn and scale
// alike; then where those matches put the item: each predicts the query position of the item's
// origin (q − s·R(θ)·g, with its own rotation θ and scale s), voted into a grid of cells a quarter of
// the item's size at that scale, each vote into the 2×2 nearest cells. An item's score is the weight
// of the matches in the densest cell over ‖q‖·‖d‖^norm_power (`geometry_norm`): the full cosine
// norm (power 1) pushed items with many features, the true ones among them, below small crops whose
// few chance matches happened to agree. One match per query feature and item, its closest
// signature, as in the first scoring, and one per gallery keypoint. Angles are in the image frame
// (y down) for gallery and query alike.
// The hits of each ranked item, in ranking order (n_items: the item table's size).
// One array, item after item (a vector per item cost an allocation each, thousands per search).
struct HitsPerItem {
    std::vector<std::uint32_t> start;  // item i's hits are at [start[i], start[i + 1])
    std::vector<const Hit*> at;
    std::span<const Hit*> of(std::size_t i) { return {at.data() + start[i], at.data() + start[i + 1]}; }
};
HitsPerItem hits_per_item(const std::vector<Hit>& hits, const std::vector<std::pair<float, std::uint32_t>>& ranked,
                          std::size_t n_items) {
    std::vector<std::int32_t> slot(n_items, -1);
    for (std::size_t i = 0; i < ranked.size(); ++i) slot[ranked[i].second] = static_cast<std::int32_t>(i);
    HitsPerItem per;
    per.start.assign(ranked.size() + 1, 0);
    for (const auto& h : hits)
        if (const std::int32_t at = slot[h.item]; at >= 0) ++per.start[static_cast<std::size_t>(at) + 1];
    for (std::size_t i = 0; i < ranked.size(); ++i) per.start[i + 1] += per.start[i];
    per.at.resize(per.start.back());
    std::vector<std::uint32_t> fill(per.start.begin(), per.start.end() - 1);
    for (const auto& h : hits)
        if (const std::int32_t at = slot[h.item]; at >= 0) per.at[fill[static_cast<std::size_t>(at)]++] = &h;
    return per;
}

void rescore_geometry(const std::vector<Hit>& hits, const std::vector<Geo>& qgeo,
                      const std::vector<cv::KeyPoint>& qkp, std::vector<std::pair<float, std::uint32_t>>& ranked,
                      const std::vector<float>& norms, std::size_t n_items, double qnorm, double norm_power) {
    constexpr int kA = 16, kS = 64;
    auto per = hits_per_item(hits, ranked, n_items);
    struct Vote {
        std::int64_t cell;
        float weight;
    };
    // Each item on its own: in parallel, every range of items with its own scratch.
    cv::parallel_for_(cv::Range(0, static_cast<int>(ranked.size())), [&](const cv::Range& range) {
        std::vector<float> hist(kA * kS, 0.0f);
        std::vector<int> used;
        std::vector<const Hit*> kept;
        std::vector<Vote> votes;
        for (int item_at = range.start; item_at < range.end; ++item_at) {
            const auto i = static_cast<std::size_t>(item_at);
            auto v = per.of(i);
            std::sort(v.begin(), v.end(), [](const Hit* a, const Hit* b) {
                return a->row != b->row ? a->row < b->row : a->h < b->h;
            });
            used.clear();
            kept.clear();
            int last_row = -1;
            float extent = 64;  // the item's size, as far as its matched keypoints show it
            const auto cell_of = [&](const Hit* h) {
                const Geo& qg = qgeo[static_cast<std::size_t>(h->row)];
                const int a = ((qg.angle - h->g.angle) & 255) >> 4;
                const int ds = static_cast<int>(qg.scale) - static_cast<int>(h->g.scale);  // -255..255
                return a * kS + ((ds + 256) >> 3);
            };
            for (const Hit* h : v) {
                if (h->row == last_row) continue;
                last_row = h->row;
                kept.push_back(h);
            }
            // A gallery keypoint counts once, with its best match: a repeated texture in the photo
            // (many query features alike) would otherwise pile its matches onto one keypoint, all in
            // one place, and outvote an item whose matches are many different keypoints (burstiness:
            // Jégou, Douze and Schmid, CVPR 2009).
            std::sort(kept.begin(), kept.end(), [](const Hit* a, const Hit* b) {
                if (a->x4 != b->x4) return a->x4 < b->x4;
                if (a->y4 != b->y4) return a->y4 < b->y4;
                return a->weight > b->weight;
            });
            kept.erase(std::unique(kept.begin(), kept.end(),
                                   [](const Hit* a, const Hit* b) { return a->x4 == b->x4 && a->y4 == b->y4; }),
                       kept.end());
            for (const Hit* h : kept) {
                extent = std::max({extent, h->x4 / 4.0f, h->y4 / 4.0f});
                const int cell = cell_of(h);
                if (hist[static_cast<std::size_t>(cell)] == 0.0f) used.push_back(cell);
                hist[static_cast<std::size_t>(cell)] += h->weight;
            }
            float peak = 0;
            int best_a = 0, best_b = 0;
            const auto at = [&](int a, int b) {
                return b < 0 || b >= kS ? 0.0f : hist[static_cast<std::size_t>(((a + kA) % kA) * kS + b)];
            };
            for (int cell : used) {
                const int a = cell / kS, b = cell % kS;
                for (int da = -1; da <= 0; ++da)
                    for (int db = -1; db <= 0; ++db) {
                        const float w = at(a + da, b + db) + at(a + da + 1, b + db) + at(a + da, b + db + 1) +
                                        at(a + da + 1, b + db + 1);
                        if (w > peak) {
                            peak = w;
                            best_a = (a + da + kA) % kA;
                            best_b = b + db;
                        }
                    }
            }
            for (int cell : used) hist[static_cast<std::size_t>(cell)] = 0.0f;

            // Where the matches of that window put the item's origin.
            votes.clear();
            const double s_peak = std::exp2(((best_b + 1) * 8 - 256) / 16.0);  // the window's middle
            const double size = std::max(8.0, 0.25 * s_peak * extent);
            for (const Hit* h : kept) {
                const int cell = cell_of(h);
                const int a = cell / kS, b = cell % kS;
                if ((a != best_a && a != (best_a + 1) % kA) || (b != best_b && b != best_b + 1)) continue;
                const Geo& qg = qgeo[static_cast<std::size_t>(h->row)];
                const double theta = static_cast<std::uint8_t>(qg.angle - h->g.angle) * (2.0 * CV_PI / 256.0);
                const double sc = std::exp2((static_cast<int>(qg.scale) - static_cast<int>(h->g.scale)) / 16.0);
                const double gx = h->x4 / 4.0, gy = h->y4 / 4.0;
                const cv::Point2f& q = qkp[static_cast<std::size_t>(h->row)].pt;
                const double co = std::cos(theta), si = std::sin(theta);
                const double tx = (q.x - sc * (co * gx - si * gy)) / size - 0.5;
                const double ty = (q.y - sc * (si * gx + co * gy)) / size - 0.5;
                const auto x0 = static_cast<std::int64_t>(std::floor(tx)), y0 = static_cast<std::int64_t>(std::floor(ty));
                for (std::int64_t dy = 0; dy <= 1; ++dy)
                    for (std::int64_t dx = 0; dx <= 1; ++dx)
                        votes.push_back({((x0 + dx) << 32) ^ ((y0 + dy) & 0xffffffff), h->weight});
            }
            std::sort(votes.begin(), votes.end(), [](const Vote& a, const Vote& b) { return a.cell < b.cell; });
            float best = 0;
            for (std::size_t k = 0; k < votes.size();) {
                float w = 0;
                std::size_t e = k;
                for (; e < votes.size() && votes[e].cell == votes[k].cell; ++e) w += votes[e].weight;
                best = std::max(best, w);
                k = e;
            }
            ranked[i].first = static_cast<float>(best / (std::pow(norms[i], norm_power) * qnorm));
        }
    }, 8);
}

struct ItemEntry {
    std::string id;
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
        static const std::array<ConfigKey, 12> keys{{
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
            {.name = "query_words_ratio", .type = ConfigType::number, .default_value = "0", .min = 0, .max = 100,
             .description = "a neighbouring word is looked up only if its centre is at most this many times as far from the query feature as its own word's centre (0: always, up to query_words)"},
            {.name = "geometry_rerank", .type = ConfigType::integer, .default_value = "3000", .min = 0, .max = 1e6,
             .description = "the N best items by tf-idf are scored again by their word matches that agree on one rotation, scale change and position (weak geometric consistency with Hough voting; 0: off)"},
            {.name = "geometry_norm", .type = ConfigType::number, .default_value = "0.75", .min = 0, .max = 1,
             .description = "the re-ranking divides an item's agreeing weight by its tf-idf norm to this power: 1 as the cosine of the first ranking, 0 not at all; below 1 favours small items less"},
            {.name = "match_item_threshold", .type = ConfigType::integer, .default_value = "64", .min = 0, .max = 64,
             .description = "match_item (the pipeline's second look in a rectified photo) keeps only word matches whose signatures differ in at most this many bits (64: all)"},
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
          query_words_(static_cast<int>(ctx.config().get_int("query_words"))),
          query_words_ratio_(ctx.config().get_double("query_words_ratio")),
          rerank_(static_cast<std::size_t>(ctx.config().get_int("geometry_rerank"))),
          geometry_norm_(ctx.config().get_double("geometry_norm")),
          match_item_threshold_(static_cast<int>(ctx.config().get_int("match_item_threshold"))) {
        const std::string key = ctx.config().get_string("vocabulary");
        const std::string storage_name = ctx.config().get_string("storage");
        auto storage = ctx.storage(storage_name);
        auto bytes = storage->get(key);
        if (!bytes)
            throw Error(ErrorCode::not_found, "vocabulary '" + key + "' is not in storage '" + storage_name +
                                                  "'; train one with `sightline vocab train --out " + key + "`");
        vocab_ = sightline::Vocabulary::parse(*bytes, "vocabulary '" + key + "' in storage '" + storage_name + "'");
        vocab_id_ = sightline::fnv1a64(bytes->data(), bytes->size());
        // Only the descriptor-defining fields must agree: a vocabulary trained with 500 keypoints
        // an image serves a gallery extracted with 800, or with another detector threshold.
        const std::string want = ctx.features_descriptor_signature();
        if (const auto diff = want.empty() ? std::string() : sightline::descriptor_mismatch(vocab_.signature(), want);
            !diff.empty())
            throw Error(ErrorCode::invalid_argument,
                        "vocabulary '" + key + "' was trained for the extractor '" + vocab_.signature() +
                            "' but this pipeline's descriptors are '" + want + "' (" + diff +
                            "); its words mean nothing for other descriptors: retrain it with `sightline vocab train` "
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
            Geo g;
        };
        std::vector<Pending> pending;
        pending.reserve(rows.size());
        std::unordered_map<std::uint32_t, std::uint32_t> tf;
        const cv::Mat proj = vocab_.projections(f.descriptors);
        for (int r : rows) {
            const std::uint8_t* row = f.descriptors.ptr(r);
            const std::uint32_t w = vocab_.quantize_row(row);
            const cv::KeyPoint& kp = f.keypoints[static_cast<std::size_t>(r)];
            pending.push_back({w, Posting{0, quarter_px(kp.pt.x), quarter_px(kp.pt.y),
                                          vocab_.embed(f.descriptors, proj, r, w)},
                               geo_of(kp)});
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
            live_norm_.push_back(static_cast<float>(std::sqrt(norm2)));
            items_.push_back(ItemEntry{id, static_cast<std::uint32_t>(pending.size()), true});
            by_id_[id] = item;
        }
        for (std::size_t i = 0; i < pending.size();) {
            const std::size_t stripe = pending[i].word % kStripes;
            std::unique_lock lock(stripes_[stripe]);
            for (; i < pending.size() && pending[i].word % kStripes == stripe; ++i) {
                Posting p = pending[i].p;
                p.item = item;
                lists_[pending[i].word].push_back(p, pending[i].g);
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
        // Correspondences are read as keypoints[row].
        if (static_cast<std::size_t>(q.rows) != query.keypoints.size())
            throw Error(ErrorCode::invalid_argument, "index-vocab: the query has " +
                                                         std::to_string(query.keypoints.size()) + " keypoints but " +
                                                         std::to_string(q.rows) + " descriptors");
        std::size_t n_items;
        {
            std::shared_lock lock(items_mutex_);
            n_items = items_.size();
        }
        if (n_items == 0) return {};

        // Every query feature's words and signatures, then each word's list read once for all the
        // features that look it up: frequent words are looked up by many of a photo's features,
        // and reading each list once halves the postings read at 100,000 items. Both steps run on
        // OpenCV's threads (as the host's worker pool sizes them).
        std::vector<std::uint32_t> own_word(static_cast<std::size_t>(q.rows));
        const int threads = q.rows >= 512 ? std::clamp(cv::getNumThreads(), 1, 8) : 1;
        std::vector<std::vector<Lookup>> parts(static_cast<std::size_t>(threads));
        cv::parallel_for_(cv::Range(0, threads), [&](const cv::Range& range) {
            std::vector<std::uint32_t> words;
            for (int c = range.start; c < range.end; ++c) {
                const int first = q.rows * c / threads, end = q.rows * (c + 1) / threads;
                const cv::Mat rows = q.rowRange(first, end);
                const cv::Mat proj = vocab_.projections(rows);  // each thread its own rows'
                for (int r = first; r < end; ++r) {
                    words.clear();
                    vocab_.quantize_near(q.ptr(r), query_words_, words, query_words_ratio_);
                    own_word[static_cast<std::size_t>(r)] = words.front();
                    for (const std::uint32_t w : words)
                        parts[static_cast<std::size_t>(c)].push_back(
                            {w, r, vocab_.embed(rows, proj, r - first, w)});
                }
            }
        });
        std::vector<Lookup> lookups;
        lookups.reserve(static_cast<std::size_t>(q.rows * query_words_));
        for (const auto& part : parts) lookups.insert(lookups.end(), part.begin(), part.end());
        std::sort(lookups.begin(), lookups.end(), [](const Lookup& a, const Lookup& b) {
            return a.word != b.word ? a.word < b.word : a.row < b.row;
        });
        std::vector<Hit> hits = scan_words(lookups, threads, n_items);
        std::vector<float> score = score_hits(hits, q.rows, n_items);
        std::unordered_map<std::uint32_t, std::uint32_t> tf;
        for (auto w : own_word) ++tf[w];
        double qnorm2 = 0;
        for (const auto& [w, n] : tf) qnorm2 += static_cast<double>(n) * n * idf2_[w];

        // Rank, dropping removed items; the item lock only for this step.
        std::vector<std::uint32_t> touched;
        for (const auto& h : hits)
            if (score[h.item] > 0) {
                touched.push_back(h.item);
                score[h.item] = -score[h.item];  // mark as collected
            }
        for (auto t : touched) score[t] = -score[t];
        std::vector<std::pair<float, std::uint32_t>> ranked;
        std::vector<float> norms;
        {
            std::shared_lock lock(items_mutex_);
            for (auto t : touched) {
                if (t >= live_norm_.size()) continue;  // a load() replaced the table meanwhile
                const float norm = live_norm_[t];
                if (norm <= 0) continue;
                ranked.push_back({static_cast<float>(score[t] / (norm * std::sqrt(qnorm2))), t});
                norms.push_back(norm);
            }
        }
        const auto better = [](const auto& x, const auto& y) {
            return x.first != y.first ? x.first > y.first : x.second < y.second;
        };
        if (rerank_ > 0) {
            std::vector<float> norm_of(n_items, 0.0f);
            for (std::size_t i = 0; i < ranked.size(); ++i) norm_of[ranked[i].second] = norms[i];
            const std::size_t m = std::min(std::max(rerank_, k), ranked.size());
            // The best m of some 60,000 touched items at 100,000: selected, then only those sorted;
            // `better` is a total order, so the same items in the same order as a partial sort.
            std::nth_element(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(m),
                             ranked.end(), better);
            ranked.resize(m);
            std::sort(ranked.begin(), ranked.end(), better);
            norms.resize(m);
            for (std::size_t i = 0; i < m; ++i) norms[i] = norm_of[ranked[i].second];
            std::vector<Geo> qgeo(query.keypoints.size());
            for (std::size_t i = 0; i < qgeo.size(); ++i) qgeo[i] = geo_of(query.keypoints[i]);
            rescore_geometry(hits, qgeo, query.keypoints, ranked, norms, n_items, std::sqrt(qnorm2), geometry_norm_);
        }
        const std::size_t keep = std::min(k, ranked.size());
        std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(keep), ranked.end(), better);
        ranked.resize(keep);
        std::vector<std::string> names;
        {
            std::shared_lock lock(items_mutex_);
            for (const auto& r : ranked) names.push_back(r.second < items_.size() ? items_[r.second].id : std::string());
        }
        std::vector<sightline::Candidate> out(ranked.size());
        for (std::size_t i = 0; i < ranked.size(); ++i) {
            out[i].id = names[i];
            out[i].score = ranked[i].first;
        }
        // Correspondences, closest first; one query feature per gallery keypoint (a keypoint that
        // many query points claim would fake inliers).
        auto per = hits_per_item(hits, ranked, n_items);
        for (std::size_t i = 0; i < out.size(); ++i) {
            auto v = per.of(i);
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
                     i < list.size() && list.where[i].item == item; ++i) {
                    const int h = __builtin_popcountll(list.sigs[i] ^ sig);
                    if (h <= match_item_threshold_)
                        out.push_back({query.keypoints[static_cast<std::size_t>(r)].pt,
                                       cv::Point2f(list.where[i].x4 / 4.0f, list.where[i].y4 / 4.0f),
                                       static_cast<float>(h)});
                }
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
        for (std::size_t i = 0; i < items_.size(); ++i)
            if (items_[i].alive) {
                w.string(items_[i].id);
                w.pod(live_norm_[i]);
                w.pod(items_[i].postings);
            }
        std::vector<Posting> buf;
        std::vector<Geo> geo;
        for (std::uint32_t word = 0; word < vocab_.words(); ++word) {
            std::shared_lock lock(stripes_[word % kStripes]);
            buf.clear();
            geo.clear();
            const auto& list = lists_[word];
            for (std::size_t i = 0; i < list.size(); ++i)
                if (const Posting p = list[i]; remap[p.item] != UINT32_MAX) {
                    buf.push_back({remap[p.item], p.x4, p.y4, p.sig});
                    geo.push_back(list.geo[i]);
                }
            w.pod<std::uint32_t>(static_cast<std::uint32_t>(buf.size()));
            if (!buf.empty()) {
                w.bytes(buf.data(), buf.size() * sizeof(Posting));
                w.bytes(geo.data(), geo.size() * sizeof(Geo));
            }
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
        std::vector<float> norms;
        std::unordered_map<std::string, std::uint32_t> by_id;
        items.reserve(std::min<std::uint32_t>(n, 1u << 24));
        norms.reserve(items.capacity());
        std::size_t live = 0;
        for (std::uint32_t i = 0; i < n; ++i) {
            ItemEntry e;
            e.id = r.string(4096);
            norms.push_back(r.pod<float>());
            e.postings = r.pod<std::uint32_t>();
            live += e.postings;
            if (!by_id.emplace(e.id, i).second) r.fail("item '" + e.id + "' appears twice");
            items.push_back(std::move(e));
        }
        std::vector<PostingList> lists(vocab_.words());
        std::vector<Posting> buf;
        std::vector<Geo> geo;
        std::size_t seen = 0;
        for (auto& list : lists) {
            const auto m = r.pod<std::uint32_t>();
            if (m > live - std::min(live, seen)) r.fail("a posting list is longer than the items' postings");
            buf.resize(m);
            geo.resize(m);
            if (m) {
                r.read(buf.data(), m * sizeof(Posting));
                r.read(geo.data(), m * sizeof(Geo));
            }
            list.reserve(m);
            for (std::size_t i = 0; i < m; ++i) {
                const Posting& p = buf[i];
                if (p.item >= n) r.fail("a posting names item " + std::to_string(p.item) + " of " + std::to_string(n));
                list.push_back(p, geo[i]);
            }
            seen += m;
        }
        r.read(magic, 4);
        if (std::memcmp(magic, kMagic, 4) != 0) r.fail("trailer missing (truncated snapshot)");
        std::lock_guard writer(write_mutex_);
        std::unique_lock items_lock(items_mutex_);
        std::vector<std::unique_lock<std::shared_mutex>> locks;
        for (auto& s : stripes_) locks.emplace_back(s);
        live_norm_ = std::move(norms);
        items_ = std::move(items);
        by_id_ = std::move(by_id);
        lists_ = std::move(lists);
        live_postings_ = seen;
        dead_postings_ = 0;
    }

private:
    static constexpr char kMagic[4] = {'S', 'L', 'V', 'I'};

    // A query feature's lookup of one word: the word, the feature, its signature in that word.
    struct Lookup {
        std::uint32_t word;
        int row;
        std::uint64_t sig;
    };

    // The hits of every lookup (sorted by word): per lookup and item, its closest posting within
    // the signature threshold. The words are cut into ranges of about equal cost, a few per
    // thread, scanned in parallel; the hits come out in word order whatever the cut.
    std::vector<Hit> scan_words(const std::vector<Lookup>& lookups, int threads, std::size_t n_items) const {
        std::vector<std::size_t> group;  // where each word's lookups start, and the end
        // Each word's cost for cutting: its list's length times its lookups plus two (the read from
        // memory); by length alone a range of frequent words, each looked up dozens of times, took
        // a thread much longer than its share (scan 6% faster, median over 40 queries, paired).
        std::vector<std::size_t> cost;
        for (std::size_t i = 0; i < lookups.size(); ++i)
            if (i == 0 || lookups[i].word != lookups[i - 1].word) {
                group.push_back(i);
                std::shared_lock lock(stripes_[lookups[i].word % kStripes]);
                cost.push_back(lists_[lookups[i].word].size() + 64);
            }
        group.push_back(lookups.size());
        std::size_t total = 0;
        for (std::size_t g = 0; g < cost.size(); ++g) {
            cost[g] *= group[g + 1] - group[g] + 2;
            total += cost[g];
        }
        const std::size_t groups = cost.size();
        const std::size_t pieces = threads > 1 ? static_cast<std::size_t>(threads) * 4 : 1;
        std::vector<std::size_t> cut{0};
        for (std::size_t g = 0, sum = 0; g < groups; ++g) {
            sum += cost[g];
            if (cut.size() < pieces && sum * pieces >= total * cut.size()) cut.push_back(g + 1);
        }
        if (cut.back() != groups) cut.push_back(groups);
        std::vector<std::vector<Hit>> found(cut.size() - 1);
        cv::parallel_for_(cv::Range(0, static_cast<int>(found.size())), [&](const cv::Range& range) {
            for (int c = range.start; c < range.end; ++c)
                for (std::size_t g = cut[static_cast<std::size_t>(c)]; g < cut[static_cast<std::size_t>(c) + 1]; ++g)
                    scan_word(lookups.data() + group[g], group[g + 1] - group[g], n_items,
                              found[static_cast<std::size_t>(c)]);
        });
        std::vector<Hit> hits;
        std::size_t n = 0;
        for (const auto& f : found) n += f.size();
        hits.reserve(n);
        for (const auto& f : found) hits.insert(hits.end(), f.begin(), f.end());
        return hits;
    }

    // The signature test is the hot loop: without the popcnt instruction (not in the x86-64
    // baseline the package is built for) each test is a call into libgcc, 3x slower, so the
    // loop is compiled twice and the CPU picks (as sightline/hamming.hpp does).
    void scan_word(const Lookup* qs, std::size_t k, std::size_t n_items, std::vector<Hit>& hits) const {
        static const bool popcnt = __builtin_cpu_supports("popcnt");
        if (popcnt)
            scan_word_popcnt(qs, k, n_items, hits);
        else
            scan_word_impl(qs, k, n_items, hits);
    }
    __attribute__((target("popcnt"))) void scan_word_popcnt(const Lookup* qs, std::size_t k, std::size_t n_items,
                                                            std::vector<Hit>& hits) const {
        scan_word_impl(qs, k, n_items, hits);
    }
    // The positions in [from, to) whose signature is within t bits of sig, into out (room for
    // to - from): a load, a popcount and a rarely taken branch per signature. prefetch: the
    // signatures come from memory, not from cache; a search reads thousands of short lists, each
    // a fresh start for the hardware prefetcher, and asking for 1 KB ahead took the scan at
    // 100,000 items from 24.5 to 22 ms (median of 40 queries).
    __attribute__((always_inline)) static std::size_t near_signatures(
        const std::uint64_t* sigs, std::size_t from, std::size_t to, std::uint64_t sig, int t,
        std::uint32_t* out, bool prefetch) {
        std::size_t found = 0;
        std::size_t i = from;
        if (prefetch)
            for (; i + 8 <= to; i += 8) {
                __builtin_prefetch(sigs + i + 128);
                for (std::size_t e = i; e < i + 8; ++e)
                    if (__builtin_popcountll(sigs[e] ^ sig) <= t)
                        out[found++] = static_cast<std::uint32_t>(e);
            }
        for (; i < to; ++i)
            if (__builtin_popcountll(sigs[i] ^ sig) <= t)
                out[found++] = static_cast<std::uint32_t>(i);
        return found;
    }

    // One word's list against the k lookups of it. The list is in item order, so one item's
    // postings are adjacent: per lookup the closest of them is kept. The list is taken a chunk at a
    // time (16 KB of signatures, read from memory once and by the other lookups from L1), every
    // lookup running over the chunk on its own.
    __attribute__((always_inline)) void scan_word_impl(const Lookup* qs, std::size_t k, std::size_t n_items,
                                                       std::vector<Hit>& hits) const {
        constexpr std::size_t kChunk = 2048;
        const std::uint32_t w = qs[0].word;
        std::shared_lock lock(stripes_[w % kStripes]);
        const auto& list = lists_[w];
        if (list.empty() || (max_list_ > 0 && list.size() > max_list_)) return;
        const int t = threshold_;
        const std::uint64_t* sigs = list.sigs.data();
        const Where* where = list.where.data();
        const std::size_t n = list.size();
        struct Run {
            std::uint32_t item = UINT32_MAX;
            int h = 0;
            std::size_t at = 0;
        };
        std::vector<Run> runs(k);
        std::array<std::uint32_t, kChunk> near;
        const auto emit = [&](std::size_t j) {
            const Run& run = runs[j];
            if (run.item == UINT32_MAX || run.item >= n_items) return;
            const Where& at = where[run.at];
            hits.push_back(
                {run.item, qs[j].row, at.x4, at.y4, static_cast<std::uint8_t>(run.h),
                 list.geo[run.at],
                 static_cast<float>(idf2_[w] * he_weight_[static_cast<std::size_t>(run.h)])});
        };
        for (std::size_t from = 0; from < n; from += kChunk) {
            const std::size_t to = std::min(n, from + kChunk);
            for (std::size_t j = 0; j < k; ++j) {
                const std::uint64_t sig = qs[j].sig;
                const std::size_t found =
                    near_signatures(sigs, from, to, sig, t, near.data(), j == 0);
                for (std::size_t f = 0; f < found; ++f) {
                    const std::size_t i = near[f];
                    const int h = __builtin_popcountll(sigs[i] ^ sig);
                    Run& run = runs[j];
                    if (where[i].item != run.item) {
                        emit(j);
                        run = Run{where[i].item, h, i};
                    } else if (h < run.h) {
                        run.h = h;
                        run.at = i;
                    }
                }
            }
        }
        for (std::size_t j = 0; j < k; ++j) emit(j);
    }

    // Per item, the sum over query features of its best hit's weight: a feature counts once per
    // item (burstiness), whichever of its words met it. Hits are taken row by row, in one order
    // whatever the threads, so the sums are the same to the last bit.
    static std::vector<float> score_hits(std::vector<Hit>& hits, int rows, std::size_t n_items) {
        std::vector<std::uint32_t> start(static_cast<std::size_t>(rows) + 1, 0);
        for (const auto& h : hits) ++start[static_cast<std::size_t>(h.row) + 1];
        for (std::size_t r = 0; r < static_cast<std::size_t>(rows); ++r) start[r + 1] += start[r];
        std::vector<Hit> by_row(hits.size());
        for (const auto& h : hits) by_row[start[static_cast<std::size_t>(h.row)]++] = h;
        hits.swap(by_row);
        std::vector<float> score(n_items, 0.0f), best(n_items, 0.0f);
        std::vector<int> stamp(n_items, -1);
        for (const auto& h : hits) {
            if (stamp[h.item] != h.row) {
                stamp[h.item] = h.row;
                best[h.item] = h.weight;
                score[h.item] += h.weight;
            } else if (h.weight > best[h.item]) {
                score[h.item] += h.weight - best[h.item];
                best[h.item] = h.weight;
            }
        }
        return score;
    }
    static constexpr std::uint32_t kVersion = 3;  // 2: 64-bit signatures; 3: orientation and scale

    // Caller holds write_mutex_ and items_mutex_ exclusively.
    void retire(std::uint32_t item) {
        ItemEntry& e = items_[item];
        e.alive = false;
        live_norm_[item] = 0;
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
                        list.geo[kept] = list.geo[i];
                        list.where[kept++] = list.where[i];
                    }
                list.sigs.resize(kept);
                list.where.resize(kept);
                list.geo.resize(kept);
                if (list.sigs.capacity() > kept + kept / 4 + 8) {
                    list.sigs.shrink_to_fit();
                    list.where.shrink_to_fit();
                    list.geo.shrink_to_fit();
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
    double query_words_ratio_;
    std::size_t rerank_;
    double geometry_norm_;
    int match_item_threshold_;
    sightline::Vocabulary vocab_;
    std::uint64_t vocab_id_ = 0;
    std::vector<float> idf2_;
    std::array<double, kBits + 1> he_weight_{};  // by signature distance

    mutable std::mutex write_mutex_;  // one writer at a time
    mutable std::shared_mutex items_mutex_;
    std::vector<ItemEntry> items_;
    // Per item (as items_) its tf-idf norm, 0 once removed: what ranking reads for tens of thousands
    // of items per search, so it is kept apart from the id strings (a cache miss per item there).
    std::vector<float> live_norm_;
    std::unordered_map<std::string, std::uint32_t> by_id_;
    mutable std::array<std::shared_mutex, kStripes> stripes_;
    std::vector<PostingList> lists_;
    std::size_t live_postings_ = 0, dead_postings_ = 0;  // under write_mutex_
};

}  // namespace

SIGHTLINE_PLUGIN(index, "vocab", VocabIndex)
