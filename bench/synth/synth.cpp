// sightline::synth — implementation. See include/sightline/synth/synth.hpp.

#include "sightline/synth/synth.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace sightline::synth {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kFitFraction = 0.8;
constexpr double kMaxTilt = 0.5;

// Converts an 8-bit grey / BGR / BGRA image to BGR (shares data when already BGR).
cv::Mat to_bgr8(const cv::Mat& in, const char* what) {
    if (in.empty()) throw std::invalid_argument(std::string("sightline::synth: empty ") + what);
    if (in.depth() != CV_8U)
        throw std::invalid_argument(std::string("sightline::synth: ") + what + " must be 8-bit");
    cv::Mat out;
    switch (in.channels()) {
        case 1: cv::cvtColor(in, out, cv::COLOR_GRAY2BGR); break;
        case 3: out = in; break;
        case 4: cv::cvtColor(in, out, cv::COLOR_BGRA2BGR); break;
        default:
            throw std::invalid_argument(std::string("sightline::synth: ") + what +
                                        " must have 1, 3 or 4 channels");
    }
    return out;
}

cv::Matx33d translation(double tx, double ty) { return {1, 0, tx, 0, 1, ty, 0, 0, 1}; }

cv::Point2d apply(const cv::Matx33d& H, cv::Point2d p) {
    const cv::Vec3d q = H * cv::Vec3d(p.x, p.y, 1.0);
    return {q[0] / q[2], q[1] / q[2]};
}

cv::Scalar random_colour(cv::RNG& rng) {
    return {double(rng.uniform(0, 256)), double(rng.uniform(0, 256)), double(rng.uniform(0, 256))};
}

// Size drawn log-uniformly in [lo, hi): many small things, a few big ones.
double log_uniform(cv::RNG& rng, double lo, double hi) {
    return std::exp(rng.uniform(std::log(lo), std::log(hi)));
}

void draw_random_shape(cv::Mat& img, cv::RNG& rng, double max_size) {
    const cv::Point c(rng.uniform(0, img.cols), rng.uniform(0, img.rows));
    const double r = log_uniform(rng, 3.0, std::max(4.0, max_size));
    const cv::Scalar col = random_colour(rng);
    const bool filled = rng.uniform(0.0, 1.0) < 0.6;
    const int thickness = filled ? cv::FILLED : rng.uniform(1, 5);
    const int line_type = rng.uniform(0, 2) == 0 ? cv::LINE_AA : cv::LINE_8;
    const double angle = rng.uniform(0.0, 180.0);
    switch (rng.uniform(0, 5)) {
        case 0:
            cv::circle(img, c, int(r), col, thickness, line_type);
            break;
        case 1: {
            const cv::Size axes(int(r), std::max(1, int(r * rng.uniform(0.2, 1.0))));
            cv::ellipse(img, c, axes, angle, 0, 360, col, thickness, line_type);
            break;
        }
        case 2: {  // axis-aligned rectangle
            const cv::Point d(int(r), std::max(1, int(r * rng.uniform(0.2, 1.5))));
            cv::rectangle(img, c - d, c + d, col, thickness, line_type);
            break;
        }
        case 3: {  // rotated rectangle
            const cv::RotatedRect rr(c, cv::Size2f(float(2 * r), float(2 * r * rng.uniform(0.2, 1.0))),
                                     float(angle));
            cv::Point2f pf[4];
            rr.points(pf);
            std::vector<cv::Point> pts(pf, pf + 4);
            if (filled)
                cv::fillConvexPoly(img, pts, col, line_type);
            else
                cv::polylines(img, pts, true, col, thickness, line_type);
            break;
        }
        default: {  // random polygon, 3..7 vertices, possibly concave
            const int n = rng.uniform(3, 8);
            std::vector<cv::Point> pts;
            for (int i = 0; i < n; ++i) {
                const double a = 2 * kPi * (i + rng.uniform(0.0, 0.8)) / n;
                const double rr = r * rng.uniform(0.4, 1.0);
                pts.emplace_back(c.x + int(rr * std::cos(a)), c.y + int(rr * std::sin(a)));
            }
            if (filled)
                cv::fillPoly(img, std::vector<std::vector<cv::Point>>{pts}, col, line_type);
            else
                cv::polylines(img, pts, true, col, thickness, line_type);
            break;
        }
    }
}

void draw_random_text(cv::Mat& img, cv::RNG& rng) {
    static constexpr char kChars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -:%&#";
    static constexpr int kFonts[] = {cv::FONT_HERSHEY_SIMPLEX, cv::FONT_HERSHEY_PLAIN,
                                     cv::FONT_HERSHEY_DUPLEX,  cv::FONT_HERSHEY_COMPLEX,
                                     cv::FONT_HERSHEY_TRIPLEX, cv::FONT_HERSHEY_SCRIPT_SIMPLEX};
    const int len = rng.uniform(3, 14);
    std::string s;
    for (int i = 0; i < len; ++i) s += kChars[rng.uniform(0, int(sizeof(kChars)) - 1)];
    const int font = kFonts[rng.uniform(0, int(std::size(kFonts)))];
    const double font_scale = log_uniform(rng, 0.4, 2.5);
    const int thickness = rng.uniform(1, 4);
    const cv::Point org(rng.uniform(-40, img.cols), rng.uniform(10, img.rows + 20));
    cv::putText(img, s, org, font, font_scale, random_colour(rng), thickness,
                rng.uniform(0, 2) == 0 ? cv::LINE_AA : cv::LINE_8);
}

// A small checkerboard or stripe patch, rotated: strong regular texture.
void draw_texture_patch(cv::Mat& img, cv::RNG& rng, double max_size) {
    const int side = std::max(8, int(rng.uniform(0.3, 1.0) * max_size));
    const int cell = rng.uniform(3, std::max(4, side / 4));
    cv::Mat patch(side, side, CV_8UC3);
    const cv::Scalar a = random_colour(rng), b = random_colour(rng);
    const bool stripes = rng.uniform(0, 2) == 0;
    for (int y = 0; y < side; ++y)
        for (int x = 0; x < side; ++x) {
            const bool on = stripes ? ((x / cell) % 2 == 0) : (((x / cell) + (y / cell)) % 2 == 0);
            const cv::Scalar& s = on ? a : b;
            patch.at<cv::Vec3b>(y, x) = cv::Vec3b(cv::saturate_cast<uchar>(s[0]),
                                                  cv::saturate_cast<uchar>(s[1]),
                                                  cv::saturate_cast<uchar>(s[2]));
        }
    const cv::Point2f c(float(rng.uniform(0, img.cols)), float(rng.uniform(0, img.rows)));
    cv::Mat M = cv::getRotationMatrix2D(cv::Point2f(side / 2.0f, side / 2.0f),
                                        rng.uniform(0.0, 360.0), 1.0);
    M.at<double>(0, 2) += c.x - side / 2.0;
    M.at<double>(1, 2) += c.y - side / 2.0;
    cv::Mat mask(side, side, CV_8U, cv::Scalar(255));
    cv::Mat warped, warped_mask;
    cv::warpAffine(patch, warped, M, img.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT);
    cv::warpAffine(mask, warped_mask, M, img.size(), cv::INTER_NEAREST, cv::BORDER_CONSTANT);
    warped.copyTo(img, warped_mask);
}

}  // namespace

std::uint64_t mix_seed(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

double fit_scale(cv::Size item_size, cv::Size photo_size) {
    const int longest = std::max(item_size.width, item_size.height);
    if (longest <= 0) throw std::invalid_argument("sightline::synth::fit_scale: empty item size");
    return kFitFraction * std::min(photo_size.width, photo_size.height) / double(longest);
}

cv::Mat warp_homography(const Warp& warp, cv::Size item_size, cv::Size photo_size) {
    const double a = item_size.width / 2.0, b = item_size.height / 2.0;

    // 1. item centre to the origin.
    const cv::Matx33d T1 = translation(-a, -b);

    // 2. perspective tilt: a trapezoid (or general quad when both are set) whose
    //    far edges are (1-|t|) times as long as the near ones.
    const double tx = std::clamp(warp.tilt_x, -kMaxTilt, kMaxTilt);
    const double ty = std::clamp(warp.tilt_y, -kMaxTilt, kMaxTilt);
    const cv::Point2f src[4] = {{float(-a), float(-b)}, {float(a), float(-b)},
                                {float(a), float(b)},   {float(-a), float(b)}};
    cv::Point2f dst[4];
    for (int i = 0; i < 4; ++i) {
        double x = src[i].x, y = src[i].y;
        const bool right = x > 0, top = y < 0;
        // tilt_x > 0: right edge far; < 0: left edge far.
        if ((tx > 0 && right) || (tx < 0 && !right)) y *= 1.0 - std::abs(tx);
        // tilt_y > 0: top edge far; < 0: bottom edge far.
        if ((ty > 0 && top) || (ty < 0 && !top)) x *= 1.0 - std::abs(ty);
        dst[i] = cv::Point2f(float(x), float(y));
    }
    cv::Matx33d P = cv::Matx33d::eye();
    if (tx != 0 || ty != 0) P = cv::Matx33d(cv::getPerspectiveTransform(src, dst));

    // 3. rotation, counter-clockwise on screen (y axis points down).
    const double th = warp.rotation_deg * kPi / 180.0;
    const double c = std::cos(th), s = std::sin(th);
    const cv::Matx33d R(c, s, 0, -s, c, 0, 0, 0, 1);

    // 4. scale relative to the fit.
    const double k = warp.scale * fit_scale(item_size, photo_size);
    const cv::Matx33d S(k, 0, 0, 0, k, 0, 0, 0, 1);

    // 5. translate so that the item centre lands on `center`.
    const cv::Matx33d M = S * R * P * T1;
    const cv::Point2d mapped_centre = apply(M, {a, b});
    cv::Point2d target(warp.center.x, warp.center.y);
    if (warp.center.x < 0 || warp.center.y < 0)
        target = {photo_size.width / 2.0, photo_size.height / 2.0};
    const cv::Matx33d H = translation(target.x - mapped_centre.x, target.y - mapped_centre.y) * M;
    return cv::Mat(H / H(2, 2), true);
}

cv::Mat clutter_background(cv::Size size, std::uint64_t seed) {
    if (size.width <= 0 || size.height <= 0)
        throw std::invalid_argument("sightline::synth::clutter_background: empty size");
    cv::RNG rng(mix_seed(seed ^ 0xc1077e4ULL));
    const double area_units = double(size.area()) / (1024.0 * 768.0);
    const double diag = std::hypot(size.width, size.height);

    // 1. colour gradient in a random direction.
    cv::Mat img(size, CV_8UC3);
    {
        const cv::Scalar c0 = random_colour(rng), c1 = random_colour(rng);
        const double ang = rng.uniform(0.0, 2 * kPi);
        const double dx = std::cos(ang), dy = std::sin(ang);
        const double t0 = std::min({0.0, dx * size.width, dy * size.height,
                                    dx * size.width + dy * size.height});
        const double t1 = std::max({0.0, dx * size.width, dy * size.height,
                                    dx * size.width + dy * size.height});
        const double span = std::max(1e-9, t1 - t0);
        for (int y = 0; y < size.height; ++y) {
            auto* row = img.ptr<cv::Vec3b>(y);
            for (int x = 0; x < size.width; ++x) {
                const double t = (dx * x + dy * y - t0) / span;
                for (int ch = 0; ch < 3; ++ch)
                    row[x][ch] = cv::saturate_cast<uchar>(c0[ch] + (c1[ch] - c0[ch]) * t);
            }
        }
    }

    // 2. soft large blobs (uneven lighting, out-of-focus objects).
    {
        cv::Mat layer = img.clone();
        const int n = 4 + rng.uniform(0, 5);
        for (int i = 0; i < n; ++i)
            cv::circle(layer, {rng.uniform(0, size.width), rng.uniform(0, size.height)},
                       int(diag * rng.uniform(0.05, 0.2)), random_colour(rng), cv::FILLED);
        cv::GaussianBlur(layer, layer, cv::Size(0, 0), diag / 40.0);
        cv::addWeighted(img, 0.5, layer, 0.5, 0.0, img);
    }

    // 3. a few large flat objects (papers, books, boxes) with outlines.
    const int n_big = std::max(2, int(std::lround(area_units * rng.uniform(5.0, 10.0))));
    for (int i = 0; i < n_big; ++i) {
        const cv::Point2f c(float(rng.uniform(0, size.width)), float(rng.uniform(0, size.height)));
        const float w = float(diag * rng.uniform(0.08, 0.3));
        const float h = float(w * rng.uniform(0.4, 1.4));
        const cv::RotatedRect rr(c, cv::Size2f(w, h), float(rng.uniform(0.0, 180.0)));
        cv::Point2f pf[4];
        rr.points(pf);
        std::vector<cv::Point> pts(pf, pf + 4);
        cv::fillConvexPoly(img, pts, random_colour(rng), cv::LINE_AA);
        if (rng.uniform(0, 2) == 0)
            cv::polylines(img, pts, true, random_colour(rng), rng.uniform(1, 4), cv::LINE_AA);
    }

    // 4. checkerboard / stripe patches.
    const int n_patch = std::max(1, int(std::lround(area_units * rng.uniform(3.0, 8.0))));
    for (int i = 0; i < n_patch; ++i) draw_texture_patch(img, rng, diag * 0.08);

    // 5. many random shapes, filled or outlined.
    const int n_shapes = std::max(10, int(std::lround(area_units * rng.uniform(100.0, 180.0))));
    for (int i = 0; i < n_shapes; ++i) draw_random_shape(img, rng, diag * 0.06);

    // 6. lines.
    const int n_lines = std::max(5, int(std::lround(area_units * rng.uniform(40.0, 80.0))));
    for (int i = 0; i < n_lines; ++i) {
        const cv::Point p0(rng.uniform(0, size.width), rng.uniform(0, size.height));
        const double len = log_uniform(rng, 10.0, diag * 0.4);
        const double ang = rng.uniform(0.0, 2 * kPi);
        const cv::Point p1(p0.x + int(len * std::cos(ang)), p0.y + int(len * std::sin(ang)));
        cv::line(img, p0, p1, random_colour(rng), rng.uniform(1, 4),
                 rng.uniform(0, 2) == 0 ? cv::LINE_AA : cv::LINE_8);
    }

    // 7. random text.
    const int n_text = std::max(3, int(std::lround(area_units * rng.uniform(25.0, 45.0))));
    for (int i = 0; i < n_text; ++i) draw_random_text(img, rng);

    // 8. tone down the saturation (real scenes are rarely this colourful).
    {
        cv::Mat grey, grey3;
        cv::cvtColor(img, grey, cv::COLOR_BGR2GRAY);
        cv::cvtColor(grey, grey3, cv::COLOR_GRAY2BGR);
        const double keep = rng.uniform(0.35, 0.7);
        cv::addWeighted(img, keep, grey3, 1.0 - keep, 0.0, img);
    }

    // 9. a little blur overall (the scene is never perfectly sharp), and
    //    stronger blur on one region (depth of field).
    cv::GaussianBlur(img, img, cv::Size(0, 0), rng.uniform(0.5, 1.1));
    {
        const int w = std::max(1, int(size.width * rng.uniform(0.2, 0.5)));
        const int h = std::max(1, int(size.height * rng.uniform(0.2, 0.5)));
        const cv::Rect roi(rng.uniform(0, std::max(1, size.width - w)),
                           rng.uniform(0, std::max(1, size.height - h)), w, h);
        cv::Mat sub = img(roi & cv::Rect(0, 0, size.width, size.height));
        cv::GaussianBlur(sub, sub, cv::Size(0, 0), rng.uniform(1.5, 3.5));
    }
    return img;
}

Photo render(const cv::Mat& item_bgr, const cv::Mat& background_bgr, const Warp& warp,
             const Degrade& degrade) {
    const cv::Mat item = to_bgr8(item_bgr, "item image");
    const cv::Mat bg = to_bgr8(background_bgr, "background image");
    if (degrade.jpeg_quality < 1 || degrade.jpeg_quality > 100)
        throw std::invalid_argument("sightline::synth::render: jpeg_quality must be in 1..100");
    if (degrade.blur_sigma < 0 || degrade.noise_sigma < 0)
        throw std::invalid_argument("sightline::synth::render: negative blur or noise sigma");

    const cv::Size photo_size = bg.size();
    Photo photo;
    photo.H = warp_homography(warp, item.size(), photo_size);
    const cv::Matx33d H(photo.H);

    // Anti-aliasing: bilinear sampling aliases when shrinking by more than
    // ~1.5x, so pre-shrink the item with INTER_AREA and warp the small copy by
    // H * A^-1, where A maps item pixels to small-copy pixels.
    cv::Mat src = item;
    cv::Matx33d H_src = H;
    const double abs_scale = std::abs(warp.scale) * fit_scale(item.size(), photo_size);
    if (abs_scale < 0.66) {
        const double f = abs_scale * 1.5;
        const cv::Size small(std::max(1, int(std::lround(item.cols * f))),
                             std::max(1, int(std::lround(item.rows * f))));
        cv::resize(item, src, small, 0, 0, cv::INTER_AREA);
        const double fx = double(small.width) / item.cols, fy = double(small.height) / item.rows;
        // pixel-centre convention: x_small = (x + 0.5) * fx - 0.5
        const cv::Matx33d A(fx, 0, 0.5 * fx - 0.5, 0, fy, 0.5 * fy - 0.5, 0, 0, 1);
        H_src = H * A.inv();
    }

    // Warp item and coverage mask; bilinear sampling against a zero border gives
    // premultiplied colour, so the composite is bg * (1 - coverage) + warped.
    cv::Mat src_f, warped, coverage;
    src.convertTo(src_f, CV_32FC3);
    cv::warpPerspective(src_f, warped, cv::Mat(H_src), photo_size, cv::INTER_LINEAR,
                        cv::BORDER_CONSTANT, cv::Scalar::all(0));
    cv::warpPerspective(cv::Mat(src.size(), CV_32F, cv::Scalar(1.0)), coverage, cv::Mat(H_src),
                        photo_size, cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar(0));
    cv::Mat bg_f, inv_cov3;
    bg.convertTo(bg_f, CV_32FC3);
    cv::Mat inv_cov = 1.0 - coverage;
    cv::merge(std::vector<cv::Mat>{inv_cov, inv_cov, inv_cov}, inv_cov3);
    cv::Mat out = bg_f.mul(inv_cov3) + warped;

    // Photometric degradation.
    out.convertTo(out, -1, degrade.contrast, 128.0 * (1.0 - degrade.contrast) + degrade.brightness);
    if (degrade.blur_sigma > 0) cv::GaussianBlur(out, out, cv::Size(0, 0), degrade.blur_sigma);
    if (degrade.noise_sigma > 0) {
        cv::RNG rng(mix_seed(degrade.noise_seed ^ 0x6e015eULL));
        cv::Mat noise(out.size(), out.type());
        rng.fill(noise, cv::RNG::NORMAL, cv::Scalar::all(0), cv::Scalar::all(degrade.noise_sigma));
        out += noise;
    }
    cv::Mat out8;
    out.convertTo(out8, CV_8UC3);  // rounds and saturates

    if (!cv::imencode(".jpg", out8, photo.jpeg, {cv::IMWRITE_JPEG_QUALITY, degrade.jpeg_quality}))
        throw std::runtime_error("sightline::synth::render: JPEG encoding failed");
    photo.image = cv::imdecode(photo.jpeg, cv::IMREAD_COLOR);
    if (photo.image.empty()) throw std::runtime_error("sightline::synth::render: JPEG decoding failed");

    const double w = item.cols, h = item.rows;
    const cv::Point2d pts[4] = {{0, 0}, {w, 0}, {w, h}, {0, h}};
    for (int i = 0; i < 4; ++i) {
        const cv::Point2d p = apply(H, pts[i]);
        photo.corners[i] = cv::Point2f(float(p.x), float(p.y));
    }
    return photo;
}

std::pair<Warp, Degrade> random_params(const Ranges& r, std::uint64_t seed, cv::Size item_size) {
    auto check = [](bool ok, const char* what) {
        if (!ok) throw std::invalid_argument(std::string("sightline::synth::random_params: ") + what);
    };
    check(item_size.width > 0 && item_size.height > 0, "empty item size");
    check(r.photo_size.width > 0 && r.photo_size.height > 0, "empty photo size");
    check(0 < r.scale_min && r.scale_min <= r.scale_max, "need 0 < scale_min <= scale_max");
    check(r.rotation_max_deg >= 0 && r.tilt_max >= 0 && r.blur_max >= 0 && r.noise_max >= 0 &&
              r.brightness_max >= 0,
          "maxima must be >= 0");
    check(0 < r.contrast_min && r.contrast_min <= r.contrast_max, "need 0 < contrast_min <= contrast_max");
    check(1 <= r.jpeg_min && r.jpeg_min <= r.jpeg_max && r.jpeg_max <= 100,
          "need 1 <= jpeg_min <= jpeg_max <= 100");

    cv::RNG rng(mix_seed(seed ^ 0x9a7a3e7e5ULL));
    // Fixed draw order: the same seed always gives the same parameters.
    Warp w;
    Degrade d;
    w.scale = rng.uniform(r.scale_min, r.scale_max);
    w.rotation_deg = rng.uniform(-r.rotation_max_deg, r.rotation_max_deg);
    w.tilt_x = rng.uniform(-r.tilt_max, r.tilt_max);
    w.tilt_y = rng.uniform(-r.tilt_max, r.tilt_max);
    d.blur_sigma = rng.uniform(0.0, r.blur_max);
    d.noise_sigma = rng.uniform(0.0, r.noise_max);
    d.brightness = rng.uniform(-r.brightness_max, r.brightness_max);
    d.contrast = rng.uniform(r.contrast_min, r.contrast_max);
    d.jpeg_quality = rng.uniform(r.jpeg_min, r.jpeg_max + 1);
    d.noise_seed = mix_seed(seed + 0x2545f4914f6cdd1dULL);
    const bool cut = rng.uniform(0.0, 1.0) < r.cutoff_probability;
    const int side = rng.uniform(0, 4);  // 0 left, 1 right, 2 top, 3 bottom
    const double cut_frac = rng.uniform(0.1, 0.3);
    const double u = rng.uniform(0.0, 1.0), v = rng.uniform(0.0, 1.0);

    // Bounding box of the warped item relative to its (exactly placed) centre.
    const double W = r.photo_size.width, Hh = r.photo_size.height;
    const cv::Matx33d H(warp_homography(w, item_size, r.photo_size));
    const cv::Point2d c0(W / 2.0, Hh / 2.0);
    double minx = c0.x, maxx = c0.x, miny = c0.y, maxy = c0.y;
    const double iw = item_size.width, ih = item_size.height;
    for (const cv::Point2d p : {cv::Point2d(0, 0), cv::Point2d(iw, 0), cv::Point2d(iw, ih),
                                cv::Point2d(0, ih)}) {
        const cv::Point2d q = apply(H, p);
        minx = std::min(minx, q.x), maxx = std::max(maxx, q.x);
        miny = std::min(miny, q.y), maxy = std::max(maxy, q.y);
    }
    const double left = c0.x - minx, right = maxx - c0.x, up = c0.y - miny, down = maxy - c0.y;
    const double bw = left + right, bh = up + down;

    // Position keeping the box inside, along each axis (centred if it can't fit).
    auto inside = [](double lo, double hi, double t) { return lo <= hi ? lo + t * (hi - lo) : (lo + hi) / 2; };
    double cx = inside(left, W - right, u);
    double cy = inside(up, Hh - down, v);
    if (cut) {
        switch (side) {
            case 0: cx = -cut_frac * bw + left; break;
            case 1: cx = W + cut_frac * bw - right; break;
            case 2: cy = -cut_frac * bh + up; break;
            default: cy = Hh + cut_frac * bh - down; break;
        }
    }
    // Warp::center < 0 means "photo centre", so keep a cut-off centre at >= 0.
    w.center = cv::Point2f(float(std::max(0.0, cx)), float(std::max(0.0, cy)));
    return {w, d};
}

}  // namespace sightline::synth
