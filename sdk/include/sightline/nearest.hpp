#pragma once
// Exact two-nearest-neighbour search between two descriptor matrices: the hot loop of brute-force
// matching (index-bruteforce over the gallery, the pipeline's per-candidate rematch). Binary
// descriptors go to hamming_top2; float ones to an L2 kernel that computes |q|^2 + |g|^2 - 2 q.g
// in register tiles (AVX-512 or AVX2/FMA when the CPU has it), several times faster than
// cv::batchDistance, which evaluates every pair on its own.
#include <algorithm>
#include <cmath>
#include <limits>
#include <opencv2/core.hpp>
#include <vector>

#include "sightline/hamming.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SIGHTLINE_NEAREST_X86 1
#endif

namespace sightline {

namespace nearest_detail {

constexpr int kTileRows = 4;  // query rows per tile
constexpr int kMaxTileCols =
    32;  // gallery rows per tile: 16 (two AVX2 vectors) or 32 (two AVX-512 ones)

struct Top2 {
    float d1 = std::numeric_limits<float>::infinity(),
          d2 = std::numeric_limits<float>::infinity();  // squared
    int i1 = -1, i2 = -1;
};

// Strict comparisons: on a tie the lower gallery row wins, so the result does not depend on tiling.
inline void push(Top2& t, float d, int i) {
    if (!(d < t.d2)) return;
    if (d < t.d1) {
        t.d2 = t.d1;
        t.i2 = t.i1;
        t.d1 = d;
        t.i1 = i;
    } else {
        t.d2 = d;
        t.i2 = i;
    }
}

// One tile: `rows` (<= 4) query rows q[0..3] (unused ones repeat the last) against the `width`
// gallery rows of `block` (dims x width, transposed, zero-padded), whose squared norms are gn
// (padding: +inf); `cols` of them are real.
struct Tile {
    const float* q[kTileRows];
    const float* qn;  // squared norms of the tile's query rows
    int rows;
    const float* block;
    const float* gn;
    int dims, width, first_col, cols;
    Top2* best;  // the tile's query rows' running results
};

// A tile row's squared distances d[0..cols) into that query row's running two nearest.
inline void push_row(Top2& best, const float* d, const Tile& t) {
    for (int j = 0; j < t.cols; ++j) push(best, d[j], t.first_col + j);
}

// Fixed width, so the compiler can vectorise the inner loop for whatever the target has.
template <int W>
void tile_portable(const Tile& t) {
    float acc[kTileRows][W] = {};
    for (int k = 0; k < t.dims; ++k) {
        const float* b = t.block + k * W;
        for (int i = 0; i < kTileRows; ++i) {
            const float s = t.q[i][k];
            for (int j = 0; j < W; ++j) acc[i][j] += s * b[j];
        }
    }
    float d[W];
    for (int i = 0; i < t.rows; ++i) {
        for (int j = 0; j < W; ++j) d[j] = t.qn[i] + t.gn[j] - 2.0f * acc[i][j];
        push_row(t.best[i], d, t);
    }
}

#ifdef SIGHTLINE_NEAREST_X86
__attribute__((target("avx2,fma"))) inline void tile_avx2(const Tile& t) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,
           a30 = a00, a31 = a00;
    const float *q0 = t.q[0], *q1 = t.q[1], *q2 = t.q[2], *q3 = t.q[3];
    for (int k = 0; k < t.dims; ++k) {
        const __m256 b0 = _mm256_loadu_ps(t.block + k * 16);
        const __m256 b1 = _mm256_loadu_ps(t.block + k * 16 + 8);
        __m256 s = _mm256_broadcast_ss(q0 + k);
        a00 = _mm256_fmadd_ps(s, b0, a00);
        a01 = _mm256_fmadd_ps(s, b1, a01);
        s = _mm256_broadcast_ss(q1 + k);
        a10 = _mm256_fmadd_ps(s, b0, a10);
        a11 = _mm256_fmadd_ps(s, b1, a11);
        s = _mm256_broadcast_ss(q2 + k);
        a20 = _mm256_fmadd_ps(s, b0, a20);
        a21 = _mm256_fmadd_ps(s, b1, a21);
        s = _mm256_broadcast_ss(q3 + k);
        a30 = _mm256_fmadd_ps(s, b0, a30);
        a31 = _mm256_fmadd_ps(s, b1, a31);
    }
    const __m256 acc[kTileRows][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    const __m256 g0 = _mm256_loadu_ps(t.gn), g1 = _mm256_loadu_ps(t.gn + 8),
                 minus2 = _mm256_set1_ps(-2.0f);
    for (int i = 0; i < t.rows; ++i) {
        Top2& best = t.best[i];
        const __m256 qn = _mm256_set1_ps(t.qn[i]);
        const __m256 d0 = _mm256_fmadd_ps(minus2, acc[i][0], _mm256_add_ps(qn, g0));
        const __m256 d1 = _mm256_fmadd_ps(minus2, acc[i][1], _mm256_add_ps(qn, g1));
        const __m256 limit = _mm256_set1_ps(best.d2);
        // Most tiles hold nothing nearer than the current second best: one compare per 8 pairs.
        if (!_mm256_movemask_ps(_mm256_cmp_ps(d0, limit, _CMP_LT_OQ)) &&
            !_mm256_movemask_ps(_mm256_cmp_ps(d1, limit, _CMP_LT_OQ)))
            continue;
        alignas(32) float d[16];
        _mm256_store_ps(d, d0);
        _mm256_store_ps(d + 8, d1);
        push_row(best, d, t);
    }
}

// The same tile twice as wide: 4 rows x 32 gallery rows in eight 16-float accumulators.
__attribute__((target("avx512f"))) inline void tile_avx512(const Tile& t) {
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,
           a30 = a00, a31 = a00;
    const float *q0 = t.q[0], *q1 = t.q[1], *q2 = t.q[2], *q3 = t.q[3];
    for (int k = 0; k < t.dims; ++k) {
        const __m512 b0 = _mm512_loadu_ps(t.block + k * 32);
        const __m512 b1 = _mm512_loadu_ps(t.block + k * 32 + 16);
        __m512 s = _mm512_set1_ps(q0[k]);
        a00 = _mm512_fmadd_ps(s, b0, a00);
        a01 = _mm512_fmadd_ps(s, b1, a01);
        s = _mm512_set1_ps(q1[k]);
        a10 = _mm512_fmadd_ps(s, b0, a10);
        a11 = _mm512_fmadd_ps(s, b1, a11);
        s = _mm512_set1_ps(q2[k]);
        a20 = _mm512_fmadd_ps(s, b0, a20);
        a21 = _mm512_fmadd_ps(s, b1, a21);
        s = _mm512_set1_ps(q3[k]);
        a30 = _mm512_fmadd_ps(s, b0, a30);
        a31 = _mm512_fmadd_ps(s, b1, a31);
    }
    const __m512 acc[kTileRows][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    const __m512 g0 = _mm512_loadu_ps(t.gn), g1 = _mm512_loadu_ps(t.gn + 16),
                 minus2 = _mm512_set1_ps(-2.0f);
    for (int i = 0; i < t.rows; ++i) {
        Top2& best = t.best[i];
        const __m512 qn = _mm512_set1_ps(t.qn[i]);
        const __m512 d0 = _mm512_fmadd_ps(minus2, acc[i][0], _mm512_add_ps(qn, g0));
        const __m512 d1 = _mm512_fmadd_ps(minus2, acc[i][1], _mm512_add_ps(qn, g1));
        const __m512 limit = _mm512_set1_ps(best.d2);
        if (!_mm512_cmp_ps_mask(d0, limit, _CMP_LT_OQ) &&
            !_mm512_cmp_ps_mask(d1, limit, _CMP_LT_OQ))
            continue;
        alignas(64) float d[32];
        _mm512_store_ps(d, d0);
        _mm512_store_ps(d + 16, d1);
        push_row(best, d, t);
    }
}
#endif

inline void squared_norms(const cv::Mat& m, std::vector<float>& out) {
    out.resize(static_cast<std::size_t>(m.rows));
    for (int r = 0; r < m.rows; ++r) {
        const float* p = m.ptr<float>(r);
        float s = 0;
        for (int k = 0; k < m.cols; ++k) s += p[k] * p[k];
        out[static_cast<std::size_t>(r)] = s;
    }
}

// A tile function and the number of gallery rows its tiles hold.
struct Kernel {
    void (*tile)(const Tile&);
    int width;
};

inline void l2_top2_with(const cv::Mat& query, const cv::Mat& gallery, cv::Mat& dist, cv::Mat& idx,
                         Kernel kernel) {
    const int n = query.rows, m = gallery.rows, dims = query.cols, width = kernel.width;
    CV_Assert(width > 0 && width <= kMaxTileCols);
    std::vector<Top2> best(static_cast<std::size_t>(n));
    std::vector<float> qn, gn_all;
    squared_norms(query, qn);
    squared_norms(gallery, gn_all);
    std::vector<float> block(static_cast<std::size_t>(dims) * static_cast<std::size_t>(width));
    float gn[kMaxTileCols];
    for (int g0 = 0; g0 < m && n > 0; g0 += width) {
        const int cols = std::min(width, m - g0);
        for (int j = 0; j < width; ++j) {
            const float* row = j < cols ? gallery.ptr<float>(g0 + j) : nullptr;
            for (int k = 0; k < dims; ++k)
                block[static_cast<std::size_t>(k * width + j)] = row ? row[k] : 0.0f;
            gn[j] = row ? gn_all[static_cast<std::size_t>(g0 + j)]
                        : std::numeric_limits<float>::infinity();
        }
        Tile t{};
        t.block = block.data();
        t.gn = gn;
        t.dims = dims;
        t.width = width;
        t.first_col = g0;
        t.cols = cols;
        for (int r0 = 0; r0 < n; r0 += kTileRows) {
            t.rows = std::min(kTileRows, n - r0);
            for (int i = 0; i < kTileRows; ++i)
                t.q[i] = query.ptr<float>(r0 + std::min(i, t.rows - 1));
            t.qn = qn.data() + r0;
            t.best = best.data() + r0;
            kernel.tile(t);
        }
    }
    dist.create(n, 2, CV_32F);
    idx.create(n, 2, CV_32S);
    // The expansion loses precision when q and g are close (the sqrt magnifies it): the winners'
    // distances are recomputed directly, so a near-duplicate reads as distance ~0, not 1e-3.
    auto exact = [&](int r, int i) {
        if (i < 0) return std::numeric_limits<float>::max();
        const float *a = query.ptr<float>(r), *b = gallery.ptr<float>(i);
        float s = 0;
        for (int k = 0; k < dims; ++k) s += (a[k] - b[k]) * (a[k] - b[k]);
        return std::sqrt(s);
    };
    for (int r = 0; r < n; ++r) {
        const Top2& b = best[static_cast<std::size_t>(r)];
        dist.at<float>(r, 0) = exact(r, b.i1);
        dist.at<float>(r, 1) = exact(r, b.i2);
        idx.at<int>(r, 0) = b.i1;
        idx.at<int>(r, 1) = b.i2;
    }
}

struct NamedKernel {
    const char* name;
    Kernel kernel;
};

// The kernels this CPU runs, fastest first; the portable one is always last.
inline std::vector<NamedKernel> available_kernels() {
    std::vector<NamedKernel> k;
#ifdef SIGHTLINE_NEAREST_X86
    if (__builtin_cpu_supports("avx512f")) k.push_back({"avx512", {tile_avx512, 32}});
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) k.push_back({"avx2", {tile_avx2, 16}});
#endif
    k.push_back({"portable", {tile_portable<16>, 16}});
    return k;
}

inline Kernel best_kernel() { return available_kernels().front().kernel; }

}  // namespace nearest_detail

// For each row of `query`, the two smallest L2 distances to rows of `gallery` (dist: N×2 CV_32F,
// not squared) and their row indices (idx: N×2 CV_32S; -1 and FLT_MAX when the gallery has fewer
// rows). Both CV_32F with the same width.
inline void l2_top2(const cv::Mat& query, const cv::Mat& gallery, cv::Mat& dist, cv::Mat& idx) {
    CV_Assert(query.type() == CV_32F && gallery.type() == CV_32F && query.cols == gallery.cols);
    static const nearest_detail::Kernel kernel = nearest_detail::best_kernel();
    nearest_detail::l2_top2_with(query, gallery, dist, idx, kernel);
}

// The two nearest gallery rows of every query row, in the descriptors' own metric: Hamming for
// CV_8U, L2 for CV_32F. Same outputs as l2_top2. The types and widths must match.
inline void nearest_two(const cv::Mat& query, const cv::Mat& gallery, cv::Mat& dist, cv::Mat& idx) {
    CV_Assert(query.type() == gallery.type() && query.cols == gallery.cols);
    if (query.type() == CV_32F) return l2_top2(query, gallery, dist, idx);
    if (query.type() == CV_8U && query.cols % 8 == 0 && query.isContinuous() &&
        gallery.isContinuous())
        return hamming_top2(query, gallery, dist, idx);
    CV_Assert(query.type() == CV_8U);
    cv::Mat d;
    cv::batchDistance(query, gallery, d, CV_32S, idx, cv::NORM_HAMMING, std::min(2, gallery.rows));
    d.convertTo(dist, CV_32F);
    if (dist.cols < 2) {  // a one-row gallery: pad to the documented N×2
        cv::hconcat(dist,
                    cv::Mat(dist.rows, 1, CV_32F, cv::Scalar(std::numeric_limits<float>::max())),
                    dist);
        cv::hconcat(idx, cv::Mat(idx.rows, 1, CV_32S, cv::Scalar(-1)), idx);
    }
}

}  // namespace sightline

#undef SIGHTLINE_NEAREST_X86  // internal to this header
