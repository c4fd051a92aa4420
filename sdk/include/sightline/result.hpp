#pragma once
#include <opencv2/core/types.hpp>

#include <array>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "sightline/storage.hpp"

namespace sightline {

struct Match {
    std::string id;
    double score = 0;  // inlier ratio of the verified homography, 0..1
    int inliers = 0;
    std::array<cv::Point2f, 4> polygon{};  // the item's corners in query-image pixels
    std::string metadata_json = "{}";
};

struct Request {
    std::string id;
    Bytes image;
    std::string content_type;
    std::map<std::string, std::string> client_fields;  // e.g. pos_x, pos_y, client_id
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct ErrorInfo {
    std::string code;  // to_string(ErrorCode)
    std::string message;
};

struct Result {
    std::string request_id;
    std::string variant;
    std::vector<Match> matches;                // best first
    std::map<std::string, double> timings_ms;  // decode, extract, search, verify, total
    std::optional<ErrorInfo> error;
};

}  // namespace sightline
