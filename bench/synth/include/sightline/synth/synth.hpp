// sightline::synth — a deterministic "phone photo" synthesiser.
//
// Takes a flat image of an item (a poster, a painting, a photograph, a
// product label ...) and produces what a phone photo of that item lying in a
// cluttered scene might look like: the item is warped by a homography
// (scale, rotation, perspective tilt, translation) onto a procedural cluttered
// background, then degraded (contrast/brightness, blur, sensor noise, JPEG).
// The exact item->photo homography is returned as ground truth.
//
// Used by the tests, the benchmarks and to make the demo queries.
//
// Determinism: every function that needs randomness takes an explicit seed and
// uses its own cv::RNG (OpenCV's fixed multiply-with-carry generator), so the
// same inputs and seed give bit-identical pixels before JPEG encoding on every
// platform; there is no global random state. (The JPEG bytes depend on the
// libjpeg build OpenCV links against.)
//
// Coordinate convention: all pixel coordinates are OpenCV's continuous
// coordinates, in which the centre of pixel (col i, row j) is at (i, j) — the
// same convention as cv::warpPerspective, cv::KeyPoint::pt and
// cv::findHomography on key points. An item of size w x h therefore covers
// [-0.5, w-0.5] x [-0.5, h-0.5]; Photo::corners are H applied to the points
// (0,0), (w,0), (w,h), (0,h), i.e. they differ from the drawn outline by at
// most half an item pixel (times the scale).

#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

namespace sightline::synth {

/// Geometry of the item in the photo.
///
/// The item->photo homography is  H = T(center) * S * R * P * T(-item centre):
///  1. the item is moved so that its centre (w/2, h/2) is at the origin;
///  2. P: perspective tilt (see tilt_x / tilt_y);
///  3. R: rotation by rotation_deg;
///  4. S: uniform scale by  scale * fit_scale(item size, photo size);
///  5. T: translation chosen so that the item centre (w/2, h/2) lands exactly
///     on `center` (or on the photo centre when center.x < 0 or center.y < 0).
struct Warp {
    /// Size relative to the "fit": at scale == 1 the item's longest side is
    /// 0.8 x the photo's shorter side (before tilt), see fit_scale(). So for
    /// a 1024x768 photo, scale 1 makes the longest side 614.4 px, scale 0.5
    /// makes it 307.2 px, whatever the item's pixel size.
    double scale = 1.0;
    /// Rotation in degrees, positive = counter-clockwise as seen on screen
    /// (the cv::getRotationMatrix2D convention).
    double rotation_deg = 0;
    /// Perspective about the vertical axis: the fraction in [-0.5, 0.5] by
    /// which the far vertical edge shrinks (its length becomes (1-|t|) times
    /// the near edge's). t > 0: the right edge is far (shorter); t < 0: the
    /// left edge is far. Values outside [-0.5, 0.5] are clamped.
    double tilt_x = 0;
    /// Perspective about the horizontal axis, same meaning for the horizontal
    /// edges: t > 0: the top edge is far (shorter) — the usual look of a
    /// photo of something lying on a table; t < 0: the bottom edge is far.
    double tilt_y = 0;
    /// Where the item's centre lands in the photo; < 0 means photo centre.
    cv::Point2f center{-1, -1};
};

/// Photometric degradation, applied in this order after compositing:
/// contrast/brightness, Gaussian blur, Gaussian noise, JPEG round trip.
struct Degrade {
    /// Gaussian blur sigma in photo pixels (0 = none).
    double blur_sigma = 0;
    /// Standard deviation of additive Gaussian noise, in 8-bit grey levels,
    /// independent per pixel and channel (0 = none).
    double noise_sigma = 0;
    /// JPEG quality 1..100 used for the encoded photo.
    int jpeg_quality = 90;
    /// Added to every channel, in grey levels (after contrast).
    double brightness = 0;
    /// Gain about mid-grey:  v' = (v - 128) * contrast + 128 + brightness.
    double contrast = 1.0;
    /// Seed of the noise pattern (extension; only matters if noise_sigma > 0).
    std::uint64_t noise_seed = 0;
};

/// A synthetic photo and its ground truth.
struct Photo {
    /// The photo as JPEG bytes (what would be uploaded / written to disk).
    std::vector<unsigned char> jpeg;
    /// The decoded BGR photo (CV_8UC3), i.e. imdecode(jpeg).
    cv::Mat image;
    /// 3x3 CV_64F homography, item pixel -> photo pixel.
    cv::Mat H;
    /// Item corners (0,0), (w,0), (w,h), (0,h) mapped into the photo by H, in
    /// that order (top-left, top-right, bottom-right, bottom-left of the
    /// item). They may lie outside the photo when the item is partly cut off.
    std::array<cv::Point2f, 4> corners;
};

/// The absolute pixel scale that Warp::scale == 1 stands for:
/// 0.8 * min(photo.width, photo.height) / max(item.width, item.height).
double fit_scale(cv::Size item_size, cv::Size photo_size);

/// The item->photo homography (3x3 CV_64F) that render() uses for `warp`.
cv::Mat warp_homography(const Warp& warp, cv::Size item_size, cv::Size photo_size);

/// A procedural cluttered scene of the given size (CV_8UC3): a colour
/// gradient, soft blobs, many random filled and outlined shapes, lines, random
/// text and some blur. Rich in corners and texture so that it produces
/// distractor features. Deterministic for a seed.
cv::Mat clutter_background(cv::Size size, std::uint64_t seed);

/// Warps `item_bgr` by warp_homography() onto `background_bgr` (the photo has
/// the background's size; the item region is replaced, with anti-aliased
/// edges), then applies `degrade`, encodes JPEG and decodes it back.
/// Inputs may be 8-bit grey, BGR or BGRA (alpha is ignored). Parts of the item
/// may fall outside the photo. Deterministic for given inputs.
/// Throws std::invalid_argument on an empty image or a bad jpeg_quality.
Photo render(const cv::Mat& item_bgr, const cv::Mat& background_bgr, const Warp& warp,
             const Degrade& degrade);

/// Ranges for random_params(). Every parameter is drawn uniformly from its
/// range: scale in [scale_min, scale_max] (relative to the fit, see
/// Warp::scale), rotation in [-rotation_max_deg, rotation_max_deg], tilt_x
/// and tilt_y each in [-tilt_max, tilt_max], blur_sigma in [0, blur_max],
/// noise_sigma in [0, noise_max], brightness in [-brightness_max,
/// brightness_max], contrast in [contrast_min, contrast_max], jpeg_quality an
/// integer in [jpeg_min, jpeg_max].
struct Ranges {
    double scale_min = 0.3, scale_max = 1.0, rotation_max_deg = 30, tilt_max = 0.3,
           blur_max = 1.5, noise_max = 6, brightness_max = 25, contrast_min = 0.75,
           contrast_max = 1.25;
    int jpeg_min = 50, jpeg_max = 90;
    /// Probability that the item is placed partly outside the photo.
    double cutoff_probability = 0.1;
    cv::Size photo_size{1024, 768};
};

/// Random warp and degradation for an item of `item_size` in a photo of
/// `r.photo_size`. Placement: the centre is drawn uniformly among the
/// positions that keep the warped item's bounding box entirely inside the
/// photo (the photo centre if the box is larger than the photo). With
/// probability cutoff_probability the item is instead pushed over one random
/// side so that between 10% and 30% of its bounding box's extent across that
/// side lies outside the photo (roughly that fraction of the item is cut
/// off). Degrade::noise_seed is derived from `seed`. Deterministic for
/// (r, seed, item_size).
std::pair<Warp, Degrade> random_params(const Ranges& r, std::uint64_t seed, cv::Size item_size);

/// Mixes a seed (splitmix64 finaliser); handy to derive per-item seeds from a
/// base seed: mix_seed(base ^ mix_seed(index)).
std::uint64_t mix_seed(std::uint64_t x);

}  // namespace sightline::synth
