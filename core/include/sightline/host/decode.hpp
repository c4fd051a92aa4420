#pragma once
#include <opencv2/core.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace sightline::host {

struct ImageHeader {
    std::string format;  // "jpeg", "png", "webp", "bmp"
    int width = 0;       // as stored, before EXIF orientation
    int height = 0;
};

// Reads the dimensions from the header alone. Throws Error(invalid_argument) for an empty body or a
// header that is not one of the supported formats, or is cut short.
ImageHeader probe_image(std::span<const std::uint8_t> bytes);

struct DecodeLimits {
    std::uint64_t max_bytes = 20'000'000;
    std::uint64_t max_pixels = 50'000'000;
};

struct DecodedImage {
    cv::Mat gray;               // CV_8UC1, EXIF orientation applied, possibly reduced
    cv::Size original;          // full-resolution size after orientation
    double scale = 1.0;         // gray pixel = original pixel × scale
    ImageHeader header;
};

// Decodes to grayscale within the limits (bytes, then pixels from the header, before any pixel is
// decoded). A JPEG is decoded at 1/2, 1/4 or 1/8 scale when its long side stays ≥ min_long_side,
// so a 12-megapixel photo is never decoded at full size. Throws Error with a message that says what
// was wrong with the input.
DecodedImage decode_gray(std::span<const std::uint8_t> bytes, const DecodeLimits& limits, int min_long_side);

// Scales so that the long side is at most working_size; returns the factor. A smaller image is
// enlarged towards working_size by at most max_upscale (1: never enlarged).
double resize_to_working(const cv::Mat& in, cv::Mat& out, int working_size, double max_upscale = 1.0);

}  // namespace sightline::host
