// SDK nearest.hpp: the tiled L2 kernels (AVX-512, AVX2, portable) and the Hamming dispatch agree
// with cv::batchDistance, the reference, on the two nearest rows and their distances, including
// the awkward shapes: sizes that are not multiples of the tile, a one-row gallery, no query rows.
#include <gtest/gtest.h>

#include <sightline/nearest.hpp>

namespace {

using sightline::nearest_detail::Kernel;
using sightline::nearest_detail::l2_top2_with;

cv::Mat random_float(int rows, int cols, int seed) {
    cv::Mat m(rows, cols, CV_32F);
    cv::RNG rng(static_cast<std::uint64_t>(seed));
    rng.fill(m, cv::RNG::UNIFORM, -1.0, 1.0);
    return m;
}

// The reference: batchDistance's two nearest (ties are not expected with random floats).
void reference(const cv::Mat& q, const cv::Mat& g, int norm, cv::Mat& dist, cv::Mat& idx) {
    cv::Mat d;
    cv::batchDistance(q, g, d, norm == cv::NORM_L2 ? CV_32F : CV_32S, idx, norm,
                      std::min(2, g.rows));
    d.convertTo(dist, CV_32F);
}

void expect_same(const cv::Mat& q, const cv::Mat& g, const cv::Mat& dist, const cv::Mat& idx,
                 int norm) {
    cv::Mat rd, ri;
    reference(q, g, norm, rd, ri);
    ASSERT_EQ(dist.rows, q.rows);
    ASSERT_EQ(dist.cols, 2);
    ASSERT_EQ(idx.cols, 2);
    for (int r = 0; r < q.rows; ++r)
        for (int c = 0; c < ri.cols; ++c) {
            EXPECT_EQ(idx.at<int>(r, c), ri.at<int>(r, c))
                << "query row " << r << " neighbour " << c;
            EXPECT_NEAR(dist.at<float>(r, c), rd.at<float>(r, c),
                        1e-4f * std::max(1.0f, rd.at<float>(r, c)));
        }
}

// Every kernel this CPU can run, each checked on its own, plus the portable one at the AVX-512
// width so that width's tiling is covered on any CPU.
std::vector<Kernel> kernels() {
    std::vector<Kernel> k{{sightline::nearest_detail::tile_portable<32>, 32}};
    for (const auto& named : sightline::nearest_detail::available_kernels()) k.push_back(named.kernel);
    return k;
}

TEST(Nearest, L2MatchesBatchDistanceOnEveryShape) {
    const std::vector<std::array<int, 3>> shapes{{37, 53, 64},   {4, 16, 64},  {8, 32, 64},
                                                 {1, 1000, 128}, {130, 17, 3}, {9, 2, 64},
                                                 {5, 33, 65}};
    int seed = 1;
    for (auto kernel : kernels())
        for (const auto& [n, m, dims] : shapes) {
            SCOPED_TRACE(testing::Message()
                         << n << "x" << m << "x" << dims << " width " << kernel.width);
            cv::Mat q = random_float(n, dims, seed++), g = random_float(m, dims, seed++);
            cv::Mat dist, idx;
            l2_top2_with(q, g, dist, idx, kernel);
            expect_same(q, g, dist, idx, cv::NORM_L2);
        }
}

TEST(Nearest, QueryRowsThatAreGalleryRowsAreFoundAtDistanceZero) {
    cv::Mat g = random_float(50, 64, 7);
    cv::Mat q = g.rowRange(10, 30).clone();
    cv::Mat dist, idx;
    sightline::nearest_two(q, g, dist, idx);
    for (int r = 0; r < q.rows; ++r) {
        EXPECT_EQ(idx.at<int>(r, 0), 10 + r);
        EXPECT_LT(dist.at<float>(r, 0), 1e-3f);
        EXPECT_GT(dist.at<float>(r, 1), 0.1f);
    }
}

TEST(Nearest, OneGalleryRowLeavesTheSecondNeighbourEmpty) {
    cv::Mat q = random_float(5, 64, 3), g = random_float(1, 64, 4);
    for (auto kernel : kernels()) {
        cv::Mat dist, idx;
        l2_top2_with(q, g, dist, idx, kernel);
        for (int r = 0; r < q.rows; ++r) {
            EXPECT_EQ(idx.at<int>(r, 0), 0);
            EXPECT_EQ(idx.at<int>(r, 1), -1);
            EXPECT_EQ(dist.at<float>(r, 1), std::numeric_limits<float>::max());
            EXPECT_NEAR(dist.at<float>(r, 0), cv::norm(q.row(r), g.row(0), cv::NORM_L2), 1e-4);
        }
    }
    cv::Mat b(3, 20, CV_8U, cv::Scalar(0)),
        one(1, 20, CV_8U, cv::Scalar(1));  // 20 bytes: not the popcnt path
    cv::Mat dist, idx;
    sightline::nearest_two(b, one, dist, idx);
    ASSERT_EQ(dist.cols, 2);
    EXPECT_EQ(idx.at<int>(0, 1), -1);
    EXPECT_EQ(dist.at<float>(0, 0), 20.0f);
}

TEST(Nearest, NoQueryRowsGiveEmptyResults) {
    cv::Mat q(0, 64, CV_32F), g = random_float(20, 64, 5), dist, idx;
    sightline::nearest_two(q, g, dist, idx);
    EXPECT_EQ(dist.rows, 0);
    EXPECT_EQ(idx.rows, 0);
}

TEST(Nearest, BinaryDescriptorsUseHamming) {
    cv::Mat q(40, 32, CV_8U), g(70, 32, CV_8U);
    cv::RNG rng(9);
    rng.fill(q, cv::RNG::UNIFORM, 0, 256);
    rng.fill(g, cv::RNG::UNIFORM, 0, 256);
    cv::Mat dist, idx;
    sightline::nearest_two(q, g, dist, idx);
    // Hamming distances of random rows tie often; compare the distances, and that the index points
    // at a row that has that distance.
    cv::Mat rd, ri;
    reference(q, g, cv::NORM_HAMMING, rd, ri);
    for (int r = 0; r < q.rows; ++r)
        for (int c = 0; c < 2; ++c) {
            EXPECT_EQ(dist.at<float>(r, c), rd.at<float>(r, c));
            EXPECT_EQ(cv::norm(q.row(r), g.row(idx.at<int>(r, c)), cv::NORM_HAMMING),
                      dist.at<float>(r, c));
        }
}

TEST(Nearest, MismatchedTypesAreRefused) {
    cv::Mat q(3, 32, CV_8U, cv::Scalar(0)), g(3, 32, CV_32F, cv::Scalar(0)), dist, idx;
    EXPECT_THROW(sightline::nearest_two(q, g, dist, idx), cv::Exception);
}

}  // namespace
