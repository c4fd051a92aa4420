#pragma once
#include <opencv2/core.hpp>

#include <cstdint>
#include <cstring>
#include <limits>

namespace sightline {

namespace hamming_detail {

__attribute__((always_inline)) inline void top2(const cv::Mat& query, const cv::Mat& gallery, cv::Mat& dist,
                                                cv::Mat& idx) {
    const int words = query.cols / 8;
    dist.create(query.rows, 2, CV_32F);
    idx.create(query.rows, 2, CV_32S);
    for (int r = 0; r < query.rows; ++r) {
        const auto* q = reinterpret_cast<const std::uint64_t*>(query.ptr(r));
        int d1 = std::numeric_limits<int>::max(), d2 = d1, i1 = -1, i2 = -1;
        for (int g = 0; g < gallery.rows; ++g) {
            const auto* x = reinterpret_cast<const std::uint64_t*>(gallery.ptr(g));
            int d = 0;
            for (int w = 0; w < words; ++w) d += __builtin_popcountll(q[w] ^ x[w]);
            if (d < d2) {
                if (d < d1) {
                    d2 = d1;
                    i2 = i1;
                    d1 = d;
                    i1 = g;
                } else {
                    d2 = d;
                    i2 = g;
                }
            }
        }
        dist.at<float>(r, 0) = static_cast<float>(d1);
        dist.at<float>(r, 1) = static_cast<float>(d2);
        idx.at<int>(r, 0) = i1;
        idx.at<int>(r, 1) = i2;
    }
}

__attribute__((target("popcnt"))) inline void top2_popcnt(const cv::Mat& q, const cv::Mat& g, cv::Mat& d,
                                                          cv::Mat& i) {
    top2(q, g, d, i);
}
inline void top2_portable(const cv::Mat& q, const cv::Mat& g, cv::Mat& d, cv::Mat& i) { top2(q, g, d, i); }

}  // namespace hamming_detail

// For each row of `query`, the two smallest Hamming distances to rows of `gallery` (dist: N×2
// CV_32F) and their row indices (idx: N×2 CV_32S, -1 when there are fewer rows). Both matrices are
// CV_8U with the same width, a multiple of 8 bytes (ORB's 32, BRISK's 64). The popcnt instruction
// is used when the CPU has it; this is the hot loop of exact binary matching.
inline void hamming_top2(const cv::Mat& query, const cv::Mat& gallery, cv::Mat& dist, cv::Mat& idx) {
    CV_Assert(query.type() == CV_8U && gallery.type() == CV_8U && query.cols == gallery.cols && query.cols % 8 == 0);
    static const bool popcnt = __builtin_cpu_supports("popcnt");
    if (popcnt)
        hamming_detail::top2_popcnt(query, gallery, dist, idx);
    else
        hamming_detail::top2_portable(query, gallery, dist, idx);
}

}  // namespace sightline
