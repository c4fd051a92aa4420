#pragma once
// A hierarchical visual vocabulary (a vocabulary tree: Nistér and Stewénius, "Scalable
// Recognition with a Vocabulary Tree", CVPR 2006): descriptors are clustered into `branching`
// groups, each group again, `depth` levels deep; a leaf is a visual word. Binary descriptors are
// clustered by k-majority (Hamming distance, bitwise-majority centres), float ones by k-means (L2).
// Quantising a descriptor costs branching x depth distance computations, whatever the size.
//
// It also carries what an inverted index needs besides the tree: the idf weight of every word,
// measured on the training images, and a Hamming-embedding signature function (Jégou, Douze and
// Schmid, "Hamming embedding and weak geometric consistency", ECCV 2008): 64 bits per descriptor
// that two descriptors of the same word share when they are close, so word matches between
// unrelated descriptors can be rejected. For float descriptors each bit compares a fixed projection
// of the descriptor's offset from its word centre with that word's median of it on the training
// descriptors (format 2): every bit then splits its word's descriptors in half, where a fixed zero
// threshold left many bits nearly constant in a word and so told nothing.
//
// The file form is versioned and checksummed, and names the extractor signature it was trained for:
// descriptors of another extractor configuration land in meaningless words.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/core/hal/hal.hpp>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "sightline/error.hpp"
#include "sightline/serialize.hpp"

namespace sightline {

class Vocabulary {
public:
    struct TrainParams {
        int branching = 16;
        int depth = 4;
        int iterations = 8;          // refinement rounds per node
        std::size_t max_samples = 400000;  // descriptors clustered (sampled evenly from all images)
        std::uint64_t seed = 1;
    };
    // done/total counts descriptors placed in leaves, so it reaches total when training ends.
    using Progress = std::function<void(std::size_t done, std::size_t total)>;

    // 2: 64-bit signatures with per-word thresholds. 1 (32-bit) files of binary vocabularies still
    // load: their signatures are the descriptor's own bits, which need no learned part.
    static constexpr std::uint32_t kFormatVersion = 2;
    static constexpr int kSignatureBits = 64;

    Vocabulary() = default;

    // per_image: the descriptors of each training image (all of one type and width). Throws
    // Error(invalid_argument) on empty or mixed input.
    static Vocabulary train(const std::vector<cv::Mat>& per_image, const TrainParams& params, std::string signature,
                            const Progress& progress = {}) {
        Vocabulary v;
        v.signature_ = std::move(signature);
        v.branching_ = params.branching;
        v.depth_ = params.depth;
        if (params.branching < 2 || params.branching > 256 || params.depth < 1 || params.depth > 8)
            throw Error(ErrorCode::invalid_argument, "vocabulary: branching must be 2..256 and depth 1..8");
        std::size_t total = 0;
        for (const auto& m : per_image) {
            if (m.empty()) continue;
            if (v.type_ < 0) {
                v.type_ = m.type();
                v.cols_ = m.cols;
            }
            if (m.type() != v.type_ || m.cols != v.cols_)
                throw Error(ErrorCode::invalid_argument, "vocabulary: training descriptors differ in type or width");
            total += static_cast<std::size_t>(m.rows);
        }
        if (v.type_ != CV_8U && v.type_ != CV_32F)
            throw Error(ErrorCode::invalid_argument, "vocabulary: no training descriptors (CV_8U or CV_32F) were given");
        if (v.type_ == CV_32F && v.cols_ > kMaxFloatCols)
            throw Error(ErrorCode::invalid_argument, "vocabulary: float descriptors wider than " +
                                                         std::to_string(kMaxFloatCols) +
                                                         " are not supported");
        if (v.type_ == CV_8U && v.cols_ % 4 != 0)
            throw Error(ErrorCode::invalid_argument, "vocabulary: binary descriptors must be a multiple of 4 bytes");
        if (total < static_cast<std::size_t>(params.branching))
            throw Error(ErrorCode::invalid_argument, "vocabulary: " + std::to_string(total) +
                                                         " training descriptors are too few for branching " +
                                                         std::to_string(params.branching));
        // Even sampling across all descriptors: every stride-th one.
        const std::size_t want = std::min(total, std::max<std::size_t>(params.max_samples, params.branching));
        cv::Mat samples(static_cast<int>(want), v.cols_, v.type_);
        {
            const double stride = static_cast<double>(total) / static_cast<double>(want);
            std::size_t next = 0, seen = 0;
            int out = 0;
            for (const auto& m : per_image)
                for (int r = 0; r < m.rows && out < samples.rows; ++r, ++seen)
                    if (seen == static_cast<std::size_t>(static_cast<double>(next) * stride)) {
                        m.row(r).copyTo(samples.row(out++));
                        ++next;
                    }
            samples = samples.rowRange(0, out);
        }
        v.projection_ = make_projection(v.cols_, params.seed);
        cv::RNG rng(params.seed);
        std::vector<int> all(static_cast<std::size_t>(samples.rows));
        std::iota(all.begin(), all.end(), 0);
        v.nodes_.push_back(Node{});
        v.building_.push_back(cv::Mat::zeros(1, v.cols_, v.type_));
        std::size_t placed = 0;
        v.split(0, samples, all, 0, params, rng, placed, static_cast<std::size_t>(samples.rows), progress);
        cv::vconcat(v.building_, v.centers_);
        v.building_.clear();
        v.centers_ = stored(v.centers_);  // from here on, exactly what a reader of the file gets

        // idf_w = log(1 + N / (n_w + 0.5)), n_w = training images containing word w: the rarer the
        // larger, never zero (a word found in every training image still says something about a
        // gallery of other images), and largest for words no training image had.
        std::vector<std::uint32_t> df(v.words_, 0);
        std::size_t images = 0;
        for (const auto& m : per_image) {
            if (m.empty()) continue;
            ++images;
            auto ws = v.quantize(m);
            std::sort(ws.begin(), ws.end());
            ws.erase(std::unique(ws.begin(), ws.end()), ws.end());
            for (auto w : ws) ++df[w];
        }
        v.idf_.resize(v.words_);
        for (std::uint32_t w = 0; w < v.words_; ++w)
            v.idf_[w] = static_cast<float>(std::log1p(static_cast<double>(images) / (df[w] + 0.5)));
        if (v.type_ == CV_32F) {
            v.learn_thresholds(per_image);
            v.thresholds_ = stored(v.thresholds_);
            v.make_word_cuts();
        }
        if (progress) progress(static_cast<std::size_t>(samples.rows), static_cast<std::size_t>(samples.rows));
        return v;
    }

    bool empty() const { return words_ == 0; }
    std::uint32_t words() const { return words_; }
    int branching() const { return branching_; }
    int depth() const { return depth_; }
    int descriptor_type() const { return type_; }
    int descriptor_cols() const { return cols_; }
    const std::string& signature() const { return signature_; }
    float idf(std::uint32_t word) const { return idf_[word]; }

    std::uint32_t quantize_row(const std::uint8_t* row) const {
        std::uint32_t n = 0;
        while (nodes_[n].children > 0) n = nearest_child(n, row);
        return static_cast<std::uint32_t>(nodes_[n].word);
    }
    // The word of a row and up to n-1 more: the leaves next to it under the same parent, nearest
    // first. A descriptor near a cell boundary then still meets its match on the other side
    // (multiple assignment, done on the query side only). max_ratio > 0 takes a neighbour only if
    // its centre is at most max_ratio times as far from the row as its own word's: a row deep
    // inside its cell then costs one lookup. Appends to out.
    void quantize_near(const std::uint8_t* row, int n, std::vector<std::uint32_t>& out,
                       double max_ratio = 0) const {
        std::uint32_t node = 0;
        // The last level's children with their distances: the neighbours are among them.
        std::vector<std::pair<double, std::uint32_t>> near;
        // One allocation per call, not one per doubling.
        if (n > 1) near.reserve(static_cast<std::size_t>(branching_));
        while (nodes_[node].children > 0) node = nearest_child(node, row, n > 1 ? &near : nullptr);
        out.push_back(static_cast<std::uint32_t>(nodes_[node].word));
        if (n <= 1 || node == 0) return;
        // distance() is squared for float descriptors, so is the bound.
        double bound = std::numeric_limits<double>::max();
        if (max_ratio > 0) {
            const auto own = std::find_if(near.begin(), near.end(),
                                          [&](const auto& c) { return c.second == node; });
            bound = own->first * max_ratio * (type_ == CV_32F ? max_ratio : 1);
        }
        std::erase_if(near, [&](const auto& c) {
            return c.second == node || nodes_[c.second].children > 0 || c.first > bound;
        });
        const std::size_t extra = std::min(near.size(), static_cast<std::size_t>(n - 1));
        std::partial_sort(near.begin(), near.begin() + static_cast<std::ptrdiff_t>(extra), near.end());
        for (std::size_t k = 0; k < extra; ++k) out.push_back(static_cast<std::uint32_t>(nodes_[near[k].second].word));
    }
    // One word per row. Throws Error(invalid_argument) when type or width differ from training.
    std::vector<std::uint32_t> quantize(const cv::Mat& descriptors) const {
        check_compatible(descriptors);
        std::vector<std::uint32_t> out(static_cast<std::size_t>(descriptors.rows));
        for (int r = 0; r < descriptors.rows; ++r) out[static_cast<std::size_t>(r)] = quantize_row(descriptors.ptr(r));
        return out;
    }
    // The 64-bit Hamming-embedding signature of a descriptor in its word. Binary: 64 bits of the
    // descriptor spread over its width (its bits already are binary tests). Float: 64 fixed
    // orthonormal projections of the descriptor's offset from its word centre, each compared with
    // the word's training median of it.
    std::uint64_t embed(const std::uint8_t* row, std::uint32_t word) const {
        if (type_ == CV_8U) return embed_binary(row);
        const cv::Mat one(1, cols_, CV_32F, const_cast<std::uint8_t*>(row));
        return signs(projections(one).ptr<float>(0), word);
    }
    // The same for many rows and words: projections() once per descriptor matrix (float
    // vocabularies; empty for binary ones), then each (row, word) costs 64 comparisons.
    cv::Mat projections(const cv::Mat& descriptors) const {
        cv::Mat out;
        if (type_ != CV_32F || descriptors.empty()) return out;
        out.create(descriptors.rows, kSignatureBits, CV_32F);
        // Accumulated over the transposed projection, 64 outputs at a time: a loop the compiler
        // vectorises (cv::gemm goes to Debian's reference BLAS here, several times slower).
        for (int r = 0; r < descriptors.rows; ++r) {
            const float* x = descriptors.ptr<float>(r);
            float acc[kSignatureBits] = {};
            for (int i = 0; i < cols_; ++i) {
                const float* p = projection_t_.ptr<float>(i);
                const float xi = x[i];
                for (int b = 0; b < kSignatureBits; ++b) acc[b] += xi * p[b];
            }
            std::memcpy(out.ptr<float>(r), acc, sizeof acc);
        }
        return out;
    }
    std::uint64_t embed(const cv::Mat& descriptors, const cv::Mat& projections, int r,
                        std::uint32_t word) const {
        return type_ == CV_8U ? embed_binary(descriptors.ptr(r))
                              : signs(projections.ptr<float>(r), word);
    }
    void check_compatible(const cv::Mat& descriptors) const {
        if (descriptors.empty()) return;
        if (descriptors.type() != type_ || descriptors.cols != cols_)
            throw Error(ErrorCode::invalid_argument,
                        "descriptors of type " + type_name(descriptors.type()) + " x " +
                            std::to_string(descriptors.cols) + " do not fit a vocabulary trained on " +
                            type_name(type_) + " x " + std::to_string(cols_));
    }

    // "SLVO" | u32 version | u64 payload size | u64 FNV-1a of payload | payload
    std::vector<std::uint8_t> serialize() const {
        std::ostringstream payload;
        BinaryWriter w(payload);
        w.string(signature_);
        w.pod<std::int32_t>(type_);
        w.pod<std::int32_t>(cols_);
        w.pod<std::int32_t>(branching_);
        w.pod<std::int32_t>(depth_);
        w.pod<std::uint32_t>(words_);
        w.pod<std::uint32_t>(static_cast<std::uint32_t>(nodes_.size()));
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
            w.pod<std::int32_t>(nodes_[i].first_child);
            w.pod<std::int32_t>(nodes_[i].children);
            w.pod<std::int32_t>(nodes_[i].word);
            const cv::Mat row = on_disk(centers_.row(static_cast<int>(i)));
            w.bytes(row.data, row.total() * row.elemSize());
        }
        w.bytes(idf_.data(), idf_.size() * sizeof(float));
        w.mat(projection_);
        w.mat(on_disk(thresholds_));
        const std::string p = payload.str();
        std::ostringstream out;
        BinaryWriter h(out);
        h.bytes("SLVO", 4);
        h.pod<std::uint32_t>(kFormatVersion);
        h.pod<std::uint64_t>(p.size());
        h.pod<std::uint64_t>(fnv1a64(p.data(), p.size()));
        h.bytes(p.data(), p.size());
        const std::string s = out.str();
        return {s.begin(), s.end()};
    }

    // what: names the file in errors. Throws Error(data_loss) for anything damaged.
    static Vocabulary parse(std::span<const std::uint8_t> bytes, const std::string& what) {
        auto fail = [&](const std::string& why) -> void { throw Error(ErrorCode::data_loss, what + ": " + why); };
        if (bytes.size() < 24 || std::memcmp(bytes.data(), "SLVO", 4) != 0) fail("not a sightline vocabulary (bad magic)");
        std::uint32_t version;
        std::uint64_t size, sum;
        std::memcpy(&version, bytes.data() + 4, 4);
        std::memcpy(&size, bytes.data() + 8, 8);
        std::memcpy(&sum, bytes.data() + 16, 8);
        if (version != kFormatVersion && version != 1)
            fail("vocabulary format version " + std::to_string(version) + " is not supported (this build reads " +
                 std::to_string(kFormatVersion) + ")");
        if (size != bytes.size() - 24) fail("truncated or padded (payload size does not match)");
        if (fnv1a64(bytes.data() + 24, size) != sum) fail("checksum mismatch: the file is damaged");
        std::istringstream in(std::string(reinterpret_cast<const char*>(bytes.data() + 24), size));
        BinaryReader r(in, what);
        Vocabulary v;
        v.signature_ = r.string();
        v.type_ = r.pod<std::int32_t>();
        v.cols_ = r.pod<std::int32_t>();
        v.branching_ = r.pod<std::int32_t>();
        v.depth_ = r.pod<std::int32_t>();
        v.words_ = r.pod<std::uint32_t>();
        const auto n = r.pod<std::uint32_t>();
        if ((v.type_ != CV_8U && v.type_ != CV_32F) || v.cols_ <= 0 || v.cols_ > 4096 || n == 0 || n > (1u << 24) ||
            v.words_ == 0 || v.words_ > n)
            r.fail("implausible vocabulary header");
        if (version == 1 && v.type_ == CV_32F)
            r.fail(
                "a format 1 float vocabulary has no per-word signature thresholds; retrain it with "
                "`sightline vocab train` (this build writes format 2)");
        v.nodes_.resize(n);
        v.centers_.create(static_cast<int>(n), v.cols_, v.type_);
        // Float centres are stored as half floats (format 2): a file half the size, and the
        // vocabulary in memory is the one that was trained (training rounds them too).
        const bool half = v.type_ == CV_32F && version >= 2;
        cv::Mat half_row(1, v.cols_, CV_16F);
        v.leaf_node_.assign(v.words_, -1);
        for (std::uint32_t i = 0; i < n; ++i) {
            Node& node = v.nodes_[i];
            node.first_child = r.pod<std::int32_t>();
            node.children = r.pod<std::int32_t>();
            node.word = r.pod<std::int32_t>();
            if (half) {
                r.read(half_row.data, half_row.total() * half_row.elemSize());
                half_row.convertTo(v.centers_.row(static_cast<int>(i)), CV_32F);
            } else {
                r.read(v.centers_.ptr(static_cast<int>(i)),
                       v.centers_.cols * v.centers_.elemSize());
            }
            const bool leaf = node.children == 0;
            if (leaf ? (node.word < 0 || static_cast<std::uint32_t>(node.word) >= v.words_)
                     : (node.first_child <= static_cast<std::int32_t>(i) || node.children < 0 ||
                        static_cast<std::int64_t>(node.first_child) + node.children > static_cast<std::int64_t>(n)))
                r.fail("node " + std::to_string(i) + " is inconsistent");
            if (leaf) v.leaf_node_[static_cast<std::size_t>(node.word)] = static_cast<int>(i);
        }
        if (std::find(v.leaf_node_.begin(), v.leaf_node_.end(), -1) != v.leaf_node_.end()) r.fail("a word has no leaf");
        v.idf_.resize(v.words_);
        r.read(v.idf_.data(), v.idf_.size() * sizeof(float));
        v.projection_ = r.mat();
        if (version == 1) return v;
        v.thresholds_ = r.mat();
        if (v.thresholds_.type() == CV_16F) v.thresholds_.convertTo(v.thresholds_, CV_32F);
        if (v.type_ == CV_32F &&
            (v.projection_.rows != kSignatureBits || v.projection_.cols != v.cols_ ||
             v.projection_.type() != CV_32F || v.cols_ > kMaxFloatCols ||
             v.thresholds_.rows != static_cast<int>(v.words_) ||
             v.thresholds_.cols != kSignatureBits || v.thresholds_.type() != CV_32F))
            r.fail("bad signature projection or thresholds");
        if (v.type_ == CV_32F) v.make_word_cuts();
        return v;
    }

private:
    struct Node {
        std::int32_t first_child = -1;
        std::int32_t children = 0;  // 0: a leaf
        std::int32_t word = -1;     // leaves only
    };

    static std::string type_name(int type) { return type == CV_8U ? "CV_8U" : type == CV_32F ? "CV_32F" : "type " + std::to_string(type); }

    static constexpr int kMaxFloatCols = 4096;

    // Float matrices as the file holds them (half floats), and back.
    static cv::Mat on_disk(const cv::Mat& m) {
        if (m.type() != CV_32F) return m;
        cv::Mat h;
        m.convertTo(h, CV_16F);
        return h;
    }
    static cv::Mat stored(const cv::Mat& m) {
        if (m.type() != CV_32F) return m;
        cv::Mat back;
        on_disk(m).convertTo(back, CV_32F);
        return back;
    }

    std::uint64_t embed_binary(const std::uint8_t* row) const {
        std::uint64_t s = 0;
        const int bits = cols_ * 8;
        for (int b = 0; b < kSignatureBits; ++b) {
            // one bit from each 64th of the descriptor (each 32nd, twice, for 256 bits)
            const int bit = (b * bits) / kSignatureBits + (b % 8);
            s |= static_cast<std::uint64_t>((row[bit / 8] >> (bit % 8)) & 1u) << b;
        }
        return s;
    }
    // P(x - c_w) > t_w, computed as Px > t_w + Pc_w: the row's projections do not depend on the
    // word.
    std::uint64_t signs(const float* px, std::uint32_t word) const {
        const float* t = word_cuts_.ptr<float>(static_cast<int>(word));
        std::uint64_t s = 0;
        for (int b = 0; b < kSignatureBits; ++b)
            if (px[b] > t[b]) s |= std::uint64_t{1} << b;
        return s;
    }
    void make_word_cuts() {
        projection_t_ = projection_.t();
        cv::Mat centres(static_cast<int>(words_), cols_, CV_32F);
        for (std::uint32_t w = 0; w < words_; ++w)
            centers_.row(leaf_node_[w]).copyTo(centres.row(static_cast<int>(w)));
        word_cuts_ = projections(centres) + thresholds_;
    }

    // out[0..64): the projections of x's offset from its word's centre.
    void project(const float* x, std::uint32_t word, float* out) const {
        const float* c = centers_.ptr<float>(leaf_node_[word]);
        float d[kMaxFloatCols];
        for (int i = 0; i < cols_; ++i) d[i] = x[i] - c[i];
        for (int b = 0; b < kSignatureBits; ++b) {
            const float* p = projection_.ptr<float>(b);
            float dot = 0;
            for (int i = 0; i < cols_; ++i) dot += p[i] * d[i];
            out[b] = dot;
        }
    }

    // Per word and bit, the median projection of the word's training descriptors (up to
    // kThresholdSamples each, in input order); a word with fewer than kMinThresholdSamples keeps 0,
    // the median of a symmetric cell.
    void learn_thresholds(const std::vector<cv::Mat>& per_image) {
        constexpr std::size_t kThresholdSamples = 256, kMinThresholdSamples = 8;
        std::vector<std::vector<float>> seen(words_);
        float proj[kSignatureBits];
        for (const auto& m : per_image)
            for (int r = 0; r < m.rows; ++r) {
                const std::uint32_t w = quantize_row(m.ptr(r));
                auto& s = seen[w];
                if (s.size() >= kThresholdSamples * kSignatureBits) continue;
                project(m.ptr<float>(r), w, proj);
                s.insert(s.end(), proj, proj + kSignatureBits);
            }
        thresholds_ = cv::Mat::zeros(static_cast<int>(words_), kSignatureBits, CV_32F);
        std::vector<float> column;
        for (std::uint32_t w = 0; w < words_; ++w) {
            const auto& s = seen[w];
            const std::size_t n = s.size() / kSignatureBits;
            if (n < kMinThresholdSamples) continue;
            float* t = thresholds_.ptr<float>(static_cast<int>(w));
            for (int b = 0; b < kSignatureBits; ++b) {
                column.clear();
                for (std::size_t i = 0; i < n; ++i)
                    column.push_back(s[i * kSignatureBits + static_cast<std::size_t>(b)]);
                std::nth_element(column.begin(),
                                 column.begin() + static_cast<std::ptrdiff_t>(n / 2), column.end());
                t[b] = column[n / 2];
            }
        }
    }

    static cv::Mat make_projection(int cols, std::uint64_t seed) {
        cv::RNG rng(seed ^ 0x5eed5eedull);
        cv::Mat g(std::max(cols, kSignatureBits), std::max(cols, kSignatureBits), CV_32F);
        rng.fill(g, cv::RNG::NORMAL, 0, 1);
        // Orthonormal rows (Q of a QR via SVD) so the 32 bits are as independent as they can be.
        cv::Mat w, u, vt;
        cv::SVD::compute(g, w, u, vt);
        return u.rowRange(0, kSignatureBits).colRange(0, cols).clone();
    }

    double distance(const std::uint8_t* a, const std::uint8_t* b) const {
        if (type_ == CV_8U) {
            int d = 0;
            int i = 0;
            for (; i + 8 <= cols_; i += 8) {
                std::uint64_t x, y;
                std::memcpy(&x, a + i, 8);
                std::memcpy(&y, b + i, 8);
                d += __builtin_popcountll(x ^ y);
            }
            for (; i + 4 <= cols_; i += 4) {
                std::uint32_t x, y;
                std::memcpy(&x, a + i, 4);
                std::memcpy(&y, b + i, 4);
                d += __builtin_popcount(x ^ y);
            }
            return d;
        }
        return cv::hal::normL2Sqr_(reinterpret_cast<const float*>(a),
                                   reinterpret_cast<const float*>(b), cols_);
    }

    // all: when given, every child with its distance, in child order.
    std::uint32_t nearest_child(
        std::uint32_t n, const std::uint8_t* row,
        std::vector<std::pair<double, std::uint32_t>>* all = nullptr) const {
        const Node& node = nodes_[n];
        std::uint32_t best = static_cast<std::uint32_t>(node.first_child);
        double bd = std::numeric_limits<double>::max();
        if (all) all->clear();
        for (int c = 0; c < node.children; ++c) {
            const auto i = static_cast<std::uint32_t>(node.first_child + c);
            const double d = distance(row, centers_.ptr(static_cast<int>(i)));
            if (all) all->push_back({d, i});
            if (d < bd) {
                bd = d;
                best = i;
            }
        }
        return best;
    }

    void make_leaf(std::uint32_t n) {
        nodes_[n].children = 0;
        nodes_[n].word = static_cast<std::int32_t>(words_++);
        leaf_node_.push_back(static_cast<int>(n));
    }

    // Clusters `members` (rows of samples) under node n into up to `branching` children and recurses.
    void split(std::uint32_t n, const cv::Mat& samples, const std::vector<int>& members, int level,
               const TrainParams& params, cv::RNG& rng, std::size_t& placed, std::size_t total,
               const Progress& progress) {
        const int k = params.branching;
        if (level >= params.depth || members.size() <= static_cast<std::size_t>(k)) {
            make_leaf(n);
            placed += members.size();
            if (progress) progress(placed, total);
            return;
        }
        // k-means++ seeding: each next centre drawn with probability proportional to the squared
        // distance to the nearest chosen one.
        std::vector<cv::Mat> centers;
        centers.push_back(samples.row(members[static_cast<std::size_t>(rng.uniform(0, static_cast<int>(members.size())))]).clone());
        std::vector<double> nearest(members.size(), std::numeric_limits<double>::max());
        while (static_cast<int>(centers.size()) < k) {
            double sum = 0;
            for (std::size_t i = 0; i < members.size(); ++i) {
                double d = distance(samples.ptr(members[i]), centers.back().data);
                if (type_ == CV_8U) d *= d;
                nearest[i] = std::min(nearest[i], d);
                sum += nearest[i];
            }
            if (sum <= 0) break;  // all remaining samples coincide with a centre
            double pick = rng.uniform(0.0, sum);
            std::size_t i = 0;
            for (; i + 1 < members.size(); ++i) {
                pick -= nearest[i];
                if (pick <= 0) break;
            }
            centers.push_back(samples.row(members[i]).clone());
        }
        const int kk = static_cast<int>(centers.size());
        std::vector<int> assign(members.size(), 0);
        for (int it = 0; it <= params.iterations; ++it) {
            bool changed = false;
            for (std::size_t i = 0; i < members.size(); ++i) {
                int best = 0;
                double bd = std::numeric_limits<double>::max();
                for (int c = 0; c < kk; ++c) {
                    const double d = distance(samples.ptr(members[i]), centers[static_cast<std::size_t>(c)].data);
                    if (d < bd) {
                        bd = d;
                        best = c;
                    }
                }
                if (assign[i] != best || it == 0) changed = true;
                assign[i] = best;
            }
            if (!changed || it == params.iterations) break;
            update_centers(samples, members, assign, centers);
        }
        std::vector<std::vector<int>> groups(static_cast<std::size_t>(kk));
        for (std::size_t i = 0; i < members.size(); ++i) groups[static_cast<std::size_t>(assign[i])].push_back(members[i]);
        groups.erase(std::remove_if(groups.begin(), groups.end(), [](const auto& g) { return g.empty(); }), groups.end());
        if (groups.size() < 2) {
            make_leaf(n);
            placed += members.size();
            if (progress) progress(placed, total);
            return;
        }
        // Final centres of the non-empty groups, then the children are laid out together.
        std::vector<cv::Mat> final_centers;
        for (const auto& g : groups) {
            std::vector<int> a(g.size(), 0);
            std::vector<cv::Mat> c{cv::Mat()};
            update_centers(samples, g, a, c);
            final_centers.push_back(c[0]);
        }
        const auto first = static_cast<std::uint32_t>(nodes_.size());
        nodes_[n].first_child = static_cast<std::int32_t>(first);
        nodes_[n].children = static_cast<std::int32_t>(groups.size());
        for (std::size_t c = 0; c < groups.size(); ++c) {
            nodes_.push_back(Node{});
            building_.push_back(final_centers[c]);
        }
        for (std::size_t c = 0; c < groups.size(); ++c)
            split(first + static_cast<std::uint32_t>(c), samples, groups[c], level + 1, params, rng, placed, total,
                  progress);
    }

    // Float: the mean. Binary: the bitwise majority (k-majority), ties to 0.
    void update_centers(const cv::Mat& samples, const std::vector<int>& members, const std::vector<int>& assign,
                        std::vector<cv::Mat>& centers) const {
        const std::size_t k = centers.size();
        if (type_ == CV_32F) {
            std::vector<cv::Mat> sum(k);
            std::vector<int> count(k, 0);
            for (auto& s : sum) s = cv::Mat::zeros(1, cols_, CV_64F);
            for (std::size_t i = 0; i < members.size(); ++i) {
                const auto c = static_cast<std::size_t>(assign[i]);
                const float* x = samples.ptr<float>(members[i]);
                double* s = sum[c].ptr<double>(0);
                for (int j = 0; j < cols_; ++j) s[j] += x[j];
                ++count[c];
            }
            for (std::size_t c = 0; c < k; ++c)
                if (count[c] > 0) sum[c].convertTo(centers[c], CV_32F, 1.0 / count[c]);
            return;
        }
        const int bits = cols_ * 8;
        std::vector<std::vector<int>> ones(k, std::vector<int>(static_cast<std::size_t>(bits), 0));
        std::vector<int> count(k, 0);
        for (std::size_t i = 0; i < members.size(); ++i) {
            const auto c = static_cast<std::size_t>(assign[i]);
            const std::uint8_t* x = samples.ptr(members[i]);
            auto& o = ones[c];
            for (int b = 0; b < bits; ++b) o[static_cast<std::size_t>(b)] += (x[b / 8] >> (b % 8)) & 1;
            ++count[c];
        }
        for (std::size_t c = 0; c < k; ++c) {
            if (count[c] == 0) continue;
            cv::Mat m = cv::Mat::zeros(1, cols_, CV_8U);
            for (int b = 0; b < bits; ++b)
                if (2 * ones[c][static_cast<std::size_t>(b)] > count[c]) m.data[b / 8] |= static_cast<std::uint8_t>(1u << (b % 8));
            centers[c] = m;
        }
    }

    std::string signature_;
    int type_ = -1;
    int cols_ = 0;
    int branching_ = 0;
    int depth_ = 0;
    std::uint32_t words_ = 0;
    std::vector<Node> nodes_;
    cv::Mat centers_;                // one row per node
    std::vector<cv::Mat> building_;  // the same while training
    std::vector<int> leaf_node_;    // word -> node
    std::vector<float> idf_;
    cv::Mat projection_;    // 64 x cols, float vocabularies' embedding
    cv::Mat thresholds_;    // words x 64 (CV_32F), float vocabularies' embedding
    cv::Mat word_cuts_;     // thresholds_ + the projected word centres (derived, not stored)
    cv::Mat projection_t_;  // cols x 64, projection_ transposed (derived)
};

}  // namespace sightline
