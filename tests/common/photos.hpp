#pragma once
// Synthetic phone photos of demo-gallery items for the integration tests (bench/synth renders
// them; the true outline comes with each photo).
#include <opencv2/imgcodecs.hpp>
#include <sightline/synth/synth.hpp>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace sightline::test {

inline const cv::Size kPhotoSize{1024, 768};

inline synth::Photo render_photo(const std::filesystem::path& item, std::uint64_t seed, const synth::Warp& w,
                                 synth::Degrade d) {
    cv::Mat img = cv::imread(item.string(), cv::IMREAD_COLOR);
    if (img.empty()) throw std::runtime_error("cannot read " + item.string());
    d.noise_seed = seed;
    return synth::render(img, synth::clutter_background(kPhotoSize, seed), w, d);
}

// The standard query of the recognition tests: half size, rotated 20°, tilted, blurred, noisy,
// JPEG quality 60, on a cluttered 1024x768 background.
inline synth::Photo phone_photo(const std::filesystem::path& item, std::uint64_t seed) {
    synth::Warp w;
    w.scale = 0.5;
    w.rotation_deg = 20;
    w.tilt_x = 0.2;
    synth::Degrade d;
    d.blur_sigma = 1.0;
    d.noise_sigma = 4;
    d.jpeg_quality = 60;
    return render_photo(item, seed, w, d);
}

// A hard photo: a third of the size, rotated 25°, tilted, blurred, noisy, dim, JPEG quality 55.
// The first look at the right candidate finds 5-9 inliers, too few to accept; the second look in
// the photo rectified into the reference's frame (verify.rectify_min_inliers) finds enough.
inline synth::Photo hard_photo(const std::filesystem::path& item, std::uint64_t seed) {
    return render_photo(item, seed, {.scale = 0.3, .rotation_deg = 25, .tilt_x = 0.25},
                        {.blur_sigma = 2.0, .noise_sigma = 6, .jpeg_quality = 55, .contrast = 0.6});
}

// An easy photo (large, slightly rotated, mild degradation) for tests about something other than
// recognition quality: client fields, the CLI, the HTTP API.
inline synth::Photo easy_photo(const std::filesystem::path& item, std::uint64_t seed = 9) {
    synth::Warp w;
    w.scale = 0.95;
    w.rotation_deg = 4;
    synth::Degrade d;
    d.blur_sigma = 0.5;
    d.noise_sigma = 2;
    d.jpeg_quality = 85;
    return render_photo(item, seed, w, d);
}

inline std::string jpeg_string(const synth::Photo& photo) { return std::string(photo.jpeg.begin(), photo.jpeg.end()); }

}  // namespace sightline::test
