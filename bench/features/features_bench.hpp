// sightline-bench-features — shared types of the feature-extractor benchmark.
//
// Every configured extractor (a features plugin + its YAML) runs on the Oxford affine sequences;
// each img1→imgN pair is scored against the ground-truth homography (repeatability, matching
// score) and extraction is timed on one core. See docs/features.md.
#pragma once

#include <cstddef>
#include <filesystem>
#include <opencv2/core.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace sightline::bench {

namespace fs = std::filesystem;

// Thrown for bad command lines and unusable inputs: main prints the message and exits with 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// One Oxford sequence: images[0] is img1, homographies[i] maps img1 to images[i + 1].
struct Sequence {
    std::string name;
    fs::path dir;
    std::vector<cv::Mat> images;  // CV_8UC1, full size
    std::vector<cv::Matx33d> homographies;
};

// What a sequence's image pairs vary, for the plot: "viewpoint", and per pair an amount such as
// "20°"; empty when the sequence is not one of the published ones.
struct SequenceInfo {
    std::string change;
    std::vector<std::string> amounts;  // img2..img6
};
SequenceInfo sequence_info(const std::string& name);

// The published sequences present in `data`, in a fixed order (viewpoint, then zoom+rotation,
// blur, light, JPEG), then any other complete sequence by name.
std::vector<std::string> default_sequences(const fs::path& data);
// Reads img1..img6 as grayscale and H1to2p..H1to6p; throws UsageError naming what is missing.
Sequence load_sequence(const fs::path& data, const std::string& name);

struct PairScore {
    std::size_t kps1 = 0, kps2 = 0;        // all keypoints of img1 and imgN
    std::size_t common1 = 0, common2 = 0;  // of those, in the region both images see
    std::size_t repeated = 0;              // one-to-one pairs of those within tolerance
    std::size_t matches = 0;               // nearest neighbours passing the ratio test
    std::size_t correct = 0;               // matches within tolerance of the true position
    double repeatability = 0;
    double matching_score = 0;
};

struct ScoreParams {
    double tolerance_px = 2.5;
    double ratio = 0.8;
};

// Scores features of img1 (size1) against features of imgN (size2) under H (img1 → imgN).
// Descriptors are compared with Hamming distance when they are CV_8U, L2 otherwise.
PairScore score_pair(const std::vector<cv::KeyPoint>& kps1, const cv::Mat& desc1, cv::Size size1,
                     const std::vector<cv::KeyPoint>& kps2, const cv::Mat& desc2, cv::Size size2,
                     const cv::Matx33d& H, const ScoreParams& params);

// One line of the plot: a configuration's matching score per sequence, pair by pair (NaN where
// there is no value).
struct PlotSeries {
    std::string label;
    std::vector<std::vector<double>>
        values;     // [sequence][pair]; empty: the configuration did not run
    int style = 0;  // picks colour, marker and dash, so a label keeps its look from plot to plot
};

// A hand-written SVG: one panel per sequence, matching score against the image pair, one line per
// series, and a legend.
std::string matching_score_svg(const std::vector<std::string>& sequences,
                               const std::vector<PlotSeries>& series, const std::string& subtitle);

}  // namespace sightline::bench
