#pragma once
// Spreading keypoints over the image (features-orb, features-surf): a photo's object is often a
// small, low-contrast part of a busy scene, and "the N strongest" then all land on the scene.
#include <opencv2/core.hpp>

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <vector>

#include "sightline/features.hpp"

namespace sightline {

// Indices into `points` of at most `max_keep` of them, chosen round-robin over the cells of a
// grid x grid layout of `size`, best first within each cell, so every cell gets an equal share and
// cells with fewer points leave their share to the others. `points` must already be sorted best
// first (the order within a cell is kept). The result is sorted ascending, so it keeps that order
// too, and it depends on nothing but the input (no threads, no ties left open).
inline std::vector<std::size_t> spread_over_grid(const std::vector<cv::Point2f>& points, cv::Size size, int grid,
                                                 std::size_t max_keep) {
    std::vector<std::size_t> kept;
    if (points.size() <= max_keep || grid <= 1 || size.width <= 0 || size.height <= 0) {
        kept.resize(std::min(points.size(), max_keep));
        for (std::size_t i = 0; i < kept.size(); ++i) kept[i] = i;
        return kept;
    }
    std::vector<std::vector<std::size_t>> cells(static_cast<std::size_t>(grid) * static_cast<std::size_t>(grid));
    for (std::size_t i = 0; i < points.size(); ++i) {
        const int cx = std::clamp(static_cast<int>(points[i].x * static_cast<float>(grid) / static_cast<float>(size.width)), 0, grid - 1);
        const int cy = std::clamp(static_cast<int>(points[i].y * static_cast<float>(grid) / static_cast<float>(size.height)), 0, grid - 1);
        cells[static_cast<std::size_t>(cy * grid + cx)].push_back(i);
    }
    kept.reserve(max_keep);
    for (std::size_t rank = 0; kept.size() < max_keep; ++rank) {
        bool any = false;
        for (const auto& c : cells) {
            if (rank >= c.size()) continue;
            any = true;
            kept.push_back(c[rank]);
            if (kept.size() == max_keep) break;
        }
        if (!any) break;
    }
    std::sort(kept.begin(), kept.end());
    return kept;
}

// The n features with the highest response (all when n is 0 or there are fewer), or with grid > 1
// the strongest per cell of `size` as above; keypoints and descriptor rows stay paired, strongest first.
inline Features strongest_features(const Features& f, std::size_t n, cv::Size size, int grid) {
    if (n == 0 || f.keypoints.size() <= n) return f;
    std::vector<int> order(f.keypoints.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        return f.keypoints[static_cast<std::size_t>(a)].response > f.keypoints[static_cast<std::size_t>(b)].response;
    });
    std::vector<cv::Point2f> points;
    points.reserve(order.size());
    for (int i : order) points.push_back(f.keypoints[static_cast<std::size_t>(i)].pt);
    const auto keep = spread_over_grid(points, size, grid, n);
    Features out;
    out.keypoints.reserve(keep.size());
    out.descriptors.create(static_cast<int>(keep.size()), f.descriptors.cols, f.descriptors.type());
    for (std::size_t i = 0; i < keep.size(); ++i) {
        const int from = order[keep[i]];
        out.keypoints.push_back(f.keypoints[static_cast<std::size_t>(from)]);
        f.descriptors.row(from).copyTo(out.descriptors.row(static_cast<int>(i)));
    }
    return out;
}

}  // namespace sightline
