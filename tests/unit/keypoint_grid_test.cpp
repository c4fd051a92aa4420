// SDK keypoint_grid.hpp: every cell gets its share, best first within a cell, spare shares go to
// the cells that have more, and the result keeps the input order.
#include <gtest/gtest.h>

#include <sightline/keypoint_grid.hpp>

using sightline::spread_over_grid;
using sightline::strongest_features;

namespace {

TEST(KeypointGrid, EveryCellGetsAnEqualShareBestFirst) {
    // 2x2 grid over 100x100: 10 points in the top-left cell (listed first, i.e. strongest), then 2
    // in each of the other three cells.
    std::vector<cv::Point2f> pts;
    for (int i = 0; i < 10; ++i) pts.emplace_back(10.f + static_cast<float>(i), 10.f);
    for (cv::Point2f p : {cv::Point2f(70, 10), cv::Point2f(80, 10), cv::Point2f(10, 70), cv::Point2f(20, 70),
                          cv::Point2f(70, 70), cv::Point2f(80, 80)})
        pts.push_back(p);
    const auto kept = spread_over_grid(pts, {100, 100}, 2, 8);
    ASSERT_EQ(kept.size(), 8u);
    // The 6 points of the three sparse cells, and the 2 best of the crowded one.
    EXPECT_EQ(kept, (std::vector<std::size_t>{0, 1, 10, 11, 12, 13, 14, 15}));
    // Strongest overall would have kept only the crowded cell.
    EXPECT_EQ(spread_over_grid(pts, {100, 100}, 1, 8), (std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(KeypointGrid, SpareSharesGoToCellsThatHaveMore) {
    std::vector<cv::Point2f> pts;
    for (int i = 0; i < 10; ++i) pts.emplace_back(5.f, 5.f + static_cast<float>(i));  // all in one cell
    pts.emplace_back(95.f, 95.f);
    const auto kept = spread_over_grid(pts, {100, 100}, 4, 6);
    EXPECT_EQ(kept, (std::vector<std::size_t>{0, 1, 2, 3, 4, 10}));
}

TEST(KeypointGrid, FewerPointsThanTheBudgetAreAllKeptAndEdgesAreClamped) {
    std::vector<cv::Point2f> pts{{-3, -3}, {100, 100}, {50, 50}};  // outside and on the edge
    EXPECT_EQ(spread_over_grid(pts, {100, 100}, 4, 10), (std::vector<std::size_t>{0, 1, 2}));
    EXPECT_EQ(spread_over_grid(pts, {100, 100}, 4, 2).size(), 2u);
    EXPECT_TRUE(spread_over_grid({}, {100, 100}, 4, 5).empty());
    EXPECT_TRUE(spread_over_grid(pts, {100, 100}, 4, 0).empty());
}

TEST(KeypointGrid, StrongestFeaturesSpreadKeepsKeypointsAndDescriptorRowsPaired) {
    // Responses 10..1: the five strongest are in the left half, the five weakest in the right.
    sightline::Features f;
    for (int i = 0; i < 10; ++i)
        f.keypoints.emplace_back(cv::Point2f(i < 5 ? 10.f : 90.f, 10.f + static_cast<float>(i)), 1.f, -1.f,
                                 static_cast<float>(10 - i));
    f.descriptors.create(10, 2, CV_32F);
    for (int i = 0; i < 10; ++i) f.descriptors.at<float>(i, 0) = static_cast<float>(i);
    const auto plain = strongest_features(f, 4, {100, 100}, 1);
    const auto spread = strongest_features(f, 4, {100, 100}, 2);
    ASSERT_EQ(plain.keypoints.size(), 4u);
    ASSERT_EQ(spread.keypoints.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) {
        EXPECT_LT(plain.keypoints[i].pt.x, 50.f);
        EXPECT_EQ(plain.descriptors.at<float>(static_cast<int>(i), 0), static_cast<float>(i));
    }
    int right = 0;
    for (std::size_t i = 0; i < 4; ++i) {
        right += spread.keypoints[i].pt.x > 50.f;
        EXPECT_EQ(spread.descriptors.at<float>(static_cast<int>(i), 0), 10.f - spread.keypoints[i].response);
    }
    EXPECT_EQ(right, 2);
    EXPECT_EQ(strongest_features(f, 0, {100, 100}, 2).keypoints.size(), 10u);
}

}  // namespace
