// Repeatability and matching score of one image pair against its ground-truth homography.
#include <algorithm>
#include <cmath>
#include <opencv2/features2d.hpp>
#include <optional>

#include "features_bench.hpp"

namespace sightline::bench {

namespace {

// The point H·p, or nothing when p maps to or beyond the horizon (w <= 0 after normalising H so
// that the origin has w = 1), where a division would give a meaningless position.
std::optional<cv::Point2d> project(const cv::Matx33d& H, const cv::Point2f& p) {
    const double w = H(2, 0) * p.x + H(2, 1) * p.y + H(2, 2);
    if (w <= 1e-9) return std::nullopt;
    return cv::Point2d((H(0, 0) * p.x + H(0, 1) * p.y + H(0, 2)) / w,
                       (H(1, 0) * p.x + H(1, 1) * p.y + H(1, 2)) / w);
}

bool inside(const cv::Point2d& p, cv::Size size) {
    return p.x >= 0 && p.y >= 0 && p.x <= size.width - 1 && p.y <= size.height - 1;
}

// Oxford's matrices are not all scaled to H(2,2) = 1; project() relies on that scale.
cv::Matx33d normalised(const cv::Matx33d& H) {
    return std::abs(H(2, 2)) > 1e-12 ? H * (1.0 / H(2, 2)) : H;
}

// Points sorted by x, so "what lies within r of q" looks at a narrow x band only (keypoint
// counts reach tens of thousands with low thresholds, where all-pairs would be slow).
class PointSet {
  public:
    explicit PointSet(const std::vector<cv::Point2d>& points) {
        for (std::size_t i = 0; i < points.size(); ++i) points_.push_back({points[i], i});
        std::sort(points_.begin(), points_.end(),
                  [](const auto& a, const auto& b) { return a.p.x < b.p.x; });
    }
    // Calls f(index, squared distance) for every point within r of q.
    template <class F>
    void for_each_within(const cv::Point2d& q, double r, F&& f) const {
        auto it = std::lower_bound(points_.begin(), points_.end(), q.x - r,
                                   [](const Entry& e, double x) { return e.p.x < x; });
        for (; it != points_.end() && it->p.x <= q.x + r; ++it) {
            const double dx = it->p.x - q.x, dy = it->p.y - q.y;
            if (dx * dx + dy * dy <= r * r) f(it->index, dx * dx + dy * dy);
        }
    }

  private:
    struct Entry {
        cv::Point2d p;
        std::size_t index;
    };
    std::vector<Entry> points_;
};

// Keypoints repeated one-to-one: closest pairs first, each keypoint used once. Counting every
// img1 keypoint with any neighbour instead lets one imgN keypoint confirm several, and where
// imgN's common region is small and dense (graf 1-5) that pushed "repeatability" above 1.
std::size_t one_to_one(const std::vector<cv::Point2d>& projected1,
                       const std::vector<cv::Point2d>& points2, double tol) {
    struct Candidate {
        double d2;
        std::size_t i, j;
    };
    std::vector<Candidate> candidates;
    const PointSet targets(points2);
    for (std::size_t i = 0; i < projected1.size(); ++i)
        targets.for_each_within(projected1[i], tol, [&](std::size_t j, double d2) {
            candidates.push_back({d2, i, j});
        });
    std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
        return a.d2 < b.d2 || (a.d2 == b.d2 && (a.i < b.i || (a.i == b.i && a.j < b.j)));
    });
    std::vector<bool> used1(projected1.size()), used2(points2.size());
    std::size_t pairs = 0;
    for (const auto& c : candidates) {
        if (used1[c.i] || used2[c.j]) continue;
        used1[c.i] = used2[c.j] = true;
        ++pairs;
    }
    return pairs;
}

double ratio_of(std::size_t a, std::size_t b) {
    return b ? static_cast<double>(a) / static_cast<double>(b) : 0.0;
}

}  // namespace

PairScore score_pair(const std::vector<cv::KeyPoint>& kps1, const cv::Mat& desc1, cv::Size size1,
                     const std::vector<cv::KeyPoint>& kps2, const cv::Mat& desc2, cv::Size size2,
                     const cv::Matx33d& H_in, const ScoreParams& params) {
    const cv::Matx33d H = normalised(H_in);
    const cv::Matx33d H_inv = normalised(H_in.inv());
    const double tol = params.tolerance_px;

    PairScore s;
    s.kps1 = kps1.size();
    s.kps2 = kps2.size();

    // Projections of img1's keypoints; unset where H sends the point beyond the horizon.
    std::vector<std::optional<cv::Point2d>> projected(kps1.size());
    std::vector<cv::Point2d> common1, common2;
    for (std::size_t i = 0; i < kps1.size(); ++i) {
        projected[i] = project(H, kps1[i].pt);
        if (projected[i] && inside(*projected[i], size2)) common1.push_back(*projected[i]);
    }
    for (const auto& k : kps2) {
        auto p = project(H_inv, k.pt);
        if (p && inside(*p, size1)) common2.emplace_back(k.pt);
    }
    s.common1 = common1.size();
    s.common2 = common2.size();
    s.repeated = one_to_one(common1, common2, tol);
    const std::size_t denominator = std::min(s.common1, s.common2);
    s.repeatability = ratio_of(s.repeated, denominator);

    if (!desc1.empty() && desc2.rows >= 2) {
        const int norm = desc1.depth() == CV_8U ? cv::NORM_HAMMING : cv::NORM_L2;
        cv::Mat d1 = desc1, d2 = desc2;
        if (norm == cv::NORM_L2 && d1.depth() != CV_32F) d1.convertTo(d1, CV_32F);
        if (norm == cv::NORM_L2 && d2.depth() != CV_32F) d2.convertTo(d2, CV_32F);
        std::vector<std::vector<cv::DMatch>> knn;
        cv::BFMatcher(norm).knnMatch(d1, d2, knn, 2);
        for (const auto& m : knn) {
            if (m.size() < 2 || !(m[0].distance < params.ratio * m[1].distance)) continue;
            ++s.matches;
            const auto& q = projected[static_cast<std::size_t>(m[0].queryIdx)];
            const cv::Point2f& t = kps2[static_cast<std::size_t>(m[0].trainIdx)].pt;
            if (q && std::hypot(q->x - t.x, q->y - t.y) <= tol) ++s.correct;
        }
    }
    s.matching_score = ratio_of(s.correct, denominator);
    return s;
}

}  // namespace sightline::bench
