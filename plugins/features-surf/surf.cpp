#include "surf.hpp"

#include <sightline/keypoint_grid.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

namespace sightline::surf {

namespace {

// Integral image with sums that clamp to the image, for wavelets that overhang the border.
class Integral {
  public:
    explicit Integral(const cv::Mat& gray) {
        cv::integral(gray, sum_, CV_64F);
        w_ = gray.cols;
        h_ = gray.rows;
        stride_ = static_cast<std::size_t>(sum_.cols);
        p_ = sum_.ptr<double>(0);
    }
    int width() const { return w_; }
    int height() const { return h_; }

    // Sum of the w x h box with top-left pixel (x, y); the box must lie inside the image.
    double box(int x, int y, int w, int h) const {
        const double* top = p_ + static_cast<std::size_t>(y) * stride_;
        const double* bottom = p_ + static_cast<std::size_t>(y + h) * stride_;
        return bottom[x + w] - top[x + w] - bottom[x] + top[x];
    }
    // The same, clipped to the image (the outside counts as zero).
    double box_clamped(int x, int y, int w, int h) const {
        const int x0 = std::clamp(x, 0, w_), y0 = std::clamp(y, 0, h_);
        const int x1 = std::clamp(x + w, 0, w_), y1 = std::clamp(y + h, 0, h_);
        if (x1 <= x0 || y1 <= y0) return 0;
        return box(x0, y0, x1 - x0, y1 - y0);
    }
    // Haar wavelet responses of side 2r centred on (x, y): right minus left, bottom minus top.
    void haar(int x, int y, int r, double& dx, double& dy) const {
        dx = box_clamped(x, y - r, r, 2 * r) - box_clamped(x - r, y - r, r, 2 * r);
        dy = box_clamped(x - r, y, 2 * r, r) - box_clamped(x - r, y - r, 2 * r, r);
    }

  private:
    cv::Mat sum_;
    const double* p_ = nullptr;
    std::size_t stride_ = 0;
    int w_ = 0, h_ = 0;
};

// Filter side of octave o (0-based), interval i: 9, 15, 21, 27 | 15, 27, 39, 51 | 27, 51, 75, 99
// ...
int filter_size(int octave, int interval) {
    return 3 * ((2 << octave) * (interval + 1) + 1);
}

struct Layer {
    int size = 0;  // filter side L
    int step = 1;  // sampling step in pixels
    int rows = 0, cols = 0;
    std::vector<float> det;  // 0 where the filter does not fit
    std::vector<signed char> trace_sign;

    float at(int r, int c) const {
        return det[static_cast<std::size_t>(r) * static_cast<std::size_t>(cols) +
                   static_cast<std::size_t>(c)];
    }
};

// Area-normalised box approximations of Lxx, Lyy, Lxy, and det(H) = Dxx Dyy - (0.9 Dxy)^2.
void compute_layer(const Integral& ii, Layer& layer) {
    const int L = layer.size, half = (L - 1) / 2, l = L / 3;
    const int W = ii.width(), H = ii.height();
    layer.det.assign(static_cast<std::size_t>(layer.rows) * static_cast<std::size_t>(layer.cols),
                     0.f);
    layer.trace_sign.assign(layer.det.size(), 0);
    const double inv_area = 1.0 / (static_cast<double>(L) * L);
    cv::parallel_for_(cv::Range(0, layer.rows), [&](const cv::Range& range) {
        for (int r = range.start; r < range.end; ++r) {
            const int y = r * layer.step;
            if (y - half < 0 || y + half >= H) continue;
            for (int c = 0; c < layer.cols; ++c) {
                const int x = c * layer.step;
                if (x - half < 0 || x + half >= W) continue;
                // Three lobes of l x (2l-1), weights +1 -2 +1: the whole band minus 3 x the middle.
                const double dxx = ii.box(x - half, y - l + 1, L, 2 * l - 1) -
                                   3 * ii.box(x - (l - 1) / 2, y - l + 1, l, 2 * l - 1);
                const double dyy = ii.box(x - l + 1, y - half, 2 * l - 1, L) -
                                   3 * ii.box(x - l + 1, y - (l - 1) / 2, 2 * l - 1, l);
                const double dxy = ii.box(x - l, y - l, l, l) + ii.box(x + 1, y + 1, l, l) -
                                   ii.box(x + 1, y - l, l, l) - ii.box(x - l, y + 1, l, l);
                const double nxx = dxx * inv_area, nyy = dyy * inv_area, nxy = dxy * inv_area;
                const std::size_t at =
                    static_cast<std::size_t>(r) * static_cast<std::size_t>(layer.cols) +
                    static_cast<std::size_t>(c);
                layer.det[at] = static_cast<float>(nxx * nyy - 0.81 * nxy * nxy);
                layer.trace_sign[at] = nxx + nyy >= 0 ? 1 : -1;
            }
        }
    });
}

struct Detection {
    cv::KeyPoint kp;
    float scale = 0;  // s = 1.2 L / 9
};

// 3x3x3 maxima of det(H) above the threshold in the detection layers of one octave, refined by
// fitting a 3D quadratic (Brown and Lowe 2002) in x, y and filter size.
void find_maxima(const std::vector<Layer>& layers, int octave, double threshold,
                 std::vector<Detection>& out) {
    const int n = static_cast<int>(layers.size());
    for (int i = 1; i + 1 < n; ++i) {
        const Layer &below = layers[static_cast<std::size_t>(i - 1)],
                    &mid = layers[static_cast<std::size_t>(i)],
                    &above = layers[static_cast<std::size_t>(i + 1)];
        const int step = mid.step;
        // Where the largest of the three filters fits, with one sample to spare for the neighbours.
        const int half = (above.size - 1) / 2;
        const int lo = (half + step - 1) / step + 1;
        const int hi_c = std::min(mid.cols - 1, (mid.cols * step - 1 - half) / step) - 1;
        const int hi_r = std::min(mid.rows - 1, (mid.rows * step - 1 - half) / step) - 1;
        for (int r = lo; r <= hi_r; ++r) {
            for (int c = lo; c <= hi_c; ++c) {
                const float v = mid.at(r, c);
                if (v <= threshold) continue;
                bool is_max = true;
                for (int dr = -1; dr <= 1 && is_max; ++dr)
                    for (int dc = -1; dc <= 1 && is_max; ++dc) {
                        if (below.at(r + dr, c + dc) >= v || above.at(r + dr, c + dc) >= v)
                            is_max = false;
                        if ((dr != 0 || dc != 0) && mid.at(r + dr, c + dc) >= v) is_max = false;
                    }
                if (!is_max) continue;

                const double gx = (mid.at(r, c + 1) - mid.at(r, c - 1)) / 2.0;
                const double gy = (mid.at(r + 1, c) - mid.at(r - 1, c)) / 2.0;
                const double gs = (above.at(r, c) - below.at(r, c)) / 2.0;
                const double hxx = mid.at(r, c + 1) + mid.at(r, c - 1) - 2.0 * v;
                const double hyy = mid.at(r + 1, c) + mid.at(r - 1, c) - 2.0 * v;
                const double hss = above.at(r, c) + below.at(r, c) - 2.0 * v;
                const double hxy = (mid.at(r + 1, c + 1) - mid.at(r + 1, c - 1) -
                                    mid.at(r - 1, c + 1) + mid.at(r - 1, c - 1)) /
                                   4.0;
                const double hxs = (above.at(r, c + 1) - above.at(r, c - 1) - below.at(r, c + 1) +
                                    below.at(r, c - 1)) /
                                   4.0;
                const double hys = (above.at(r + 1, c) - above.at(r - 1, c) - below.at(r + 1, c) +
                                    below.at(r - 1, c)) /
                                   4.0;
                const cv::Matx33d hess(hxx, hxy, hxs, hxy, hyy, hys, hxs, hys, hss);
                const cv::Vec3d grad(gx, gy, gs);
                if (std::abs(cv::determinant(hess)) < 1e-12) continue;
                const cv::Vec3d fit = hess.solve(-grad, cv::DECOMP_LU);
                // The sample beats its 26 neighbours, so the peak is taken to be nearer to it
                // than to any of them: the fit is held to half a sample. Box-filter responses
                // are far from quadratic, so fits often land further out; rejecting those, as
                // one would in a smooth scale space, threw away a fifth of the repeatable blobs
                // (Oxford boat 1-2 matching score 0.43 -> 0.49 with them kept).
                cv::Vec3d off = fit;
                for (int k = 0; k < 3; ++k) off[k] = std::clamp(off[k], -0.5, 0.5);

                const double L = mid.size + off[2] * (above.size - mid.size);
                Detection d;
                d.scale = static_cast<float>(1.2 * L / 9.0);
                d.kp.pt = cv::Point2f(static_cast<float>((c + off[0]) * step),
                                      static_cast<float>((r + off[1]) * step));
                d.kp.size = 2.f * d.scale;
                d.kp.response = static_cast<float>(v + 0.5 * grad.dot(off));
                d.kp.octave = octave;
                d.kp.class_id = mid.trace_sign[static_cast<std::size_t>(r) *
                                                   static_cast<std::size_t>(mid.cols) +
                                               static_cast<std::size_t>(c)];
                d.kp.angle = 0;
                out.push_back(d);
            }
        }
    }
}

constexpr double kPi = std::numbers::pi;

// Dominant orientation: Haar responses (side 4s) at the samples of a disc of radius 6s, Gaussian
// weighted (sigma 2s), summed inside a window of pi/3 slid around the circle; the longest sum wins.
float orientation(const Integral& ii, const cv::Point2f& pt, float s) {
    struct Sample {
        double angle, dx, dy;
    };
    static const auto kGauss = [] {  // weights in units of s
        std::array<std::array<double, 13>, 13> g{};
        for (int i = -6; i <= 6; ++i)
            for (int j = -6; j <= 6; ++j)
                g[static_cast<std::size_t>(i + 6)][static_cast<std::size_t>(j + 6)] =
                    std::exp(-(i * i + j * j) / 8.0);
        return g;
    }();
    std::array<Sample, 113> samples;
    std::size_t n = 0;
    const int r = std::max(1, static_cast<int>(std::lround(2 * s)));
    const int cx = static_cast<int>(std::lround(pt.x)), cy = static_cast<int>(std::lround(pt.y));
    for (int i = -6; i <= 6; ++i)
        for (int j = -6; j <= 6; ++j) {
            if (i * i + j * j >= 36) continue;
            double dx, dy;
            ii.haar(cx + static_cast<int>(std::lround(i * s)),
                    cy + static_cast<int>(std::lround(j * s)), r, dx, dy);
            const double g =
                kGauss[static_cast<std::size_t>(i + 6)][static_cast<std::size_t>(j + 6)];
            dx *= g;
            dy *= g;
            samples[n++] = {std::atan2(dy, dx), dx, dy};
        }
    // Samples sorted by angle and repeated one turn later, with prefix sums, so each window's sum
    // is a difference of two prefix sums.
    std::sort(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(n),
              [](const Sample& a, const Sample& b) { return a.angle < b.angle; });
    std::array<double, 2 * 113 + 1> ang_of{}, cum_x{}, cum_y{};
    for (std::size_t k = 0; k < 2 * n; ++k) {
        const Sample& smp = samples[k % n];
        ang_of[k] = smp.angle + (k >= n ? 2 * kPi : 0.0);
        cum_x[k + 1] = cum_x[k] + smp.dx;
        cum_y[k + 1] = cum_y[k] + smp.dy;
    }
    auto first_at_or_after = [&](double a) {
        return static_cast<std::size_t>(
            std::lower_bound(ang_of.begin(), ang_of.begin() + static_cast<std::ptrdiff_t>(2 * n),
                             a) -
            ang_of.begin());
    };
    constexpr int kWindows = 72;  // the window start advances 5 degrees at a time
    std::array<double, kWindows> len{}, ang{};
    for (int w = 0; w < kWindows && n > 0; ++w) {
        const double start = -kPi + 2 * kPi * w / kWindows;
        const std::size_t from = first_at_or_after(start), to = first_at_or_after(start + kPi / 3);
        const double sx = cum_x[to] - cum_x[from], sy = cum_y[to] - cum_y[from];
        len[static_cast<std::size_t>(w)] = sx * sx + sy * sy;
        ang[static_cast<std::size_t>(w)] = std::atan2(sy, sx);
    }
    auto degrees = [](double rad) {
        double deg = rad * 180.0 / kPi;
        if (deg < 0) deg += 360.0;
        return deg >= 360.0 ? 0.f : static_cast<float>(deg);
    };
    const auto best =
        static_cast<std::size_t>(std::max_element(len.begin(), len.end()) - len.begin());
    return degrees(ang[best]);
}

// 4x4 sub-regions over a square of side 24s turned to the keypoint's angle, each summing Haar
// responses (side 2s, turned into that frame) at 9x9 samples spaced s. Neighbouring sub-regions
// overlap by 4 samples and each weighs its samples with a Gaussian (sigma 2.5s) about its own
// centre, then the sub-regions are weighted by a Gaussian (sigma 1.5 sub-regions) about the
// keypoint: a sample moving across a sub-region border then changes the descriptor smoothly, not
// by a jump. This is the overlapping variant of Agrawal, Konolige and Blas (ECCV 2008, "M-SURF");
// the paper's original has disjoint 5x5 samples and one Gaussian of sigma 3.3s.
void describe(const Integral& ii, const cv::KeyPoint& kp, float s, bool extended, float* out) {
    constexpr int kSide = 24;  // sample positions per axis, at (k - 11.5) s
    static const auto kWeights = [] {
        // Per axis: weight of sample k in sub-region q (0 when outside its 9 samples).
        std::array<std::array<double, 4>, kSide> w{};
        for (int k = 0; k < kSide; ++k)
            for (int q = 0; q < 4; ++q) {
                const double centre = (q - 1.5) * 5.0, u = k - 11.5;
                w[static_cast<std::size_t>(k)][static_cast<std::size_t>(q)] =
                    std::abs(u - centre) <= 4.5
                        ? std::exp(-(u - centre) * (u - centre) / (2 * 2.5 * 2.5))
                        : 0.0;
            }
        return w;
    }();
    static const auto kRegionWeights = [] {
        std::array<double, 16> w{};
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j)
                w[static_cast<std::size_t>(j * 4 + i)] =
                    std::exp(-((i - 1.5) * (i - 1.5) + (j - 1.5) * (j - 1.5)) / (2 * 1.5 * 1.5));
        return w;
    }();
    const int per_region = extended ? 8 : 4;
    std::array<double, 128> acc{};
    const double theta = kp.angle * kPi / 180.0, co = std::cos(theta), si = std::sin(theta);
    const int r = std::max(1, static_cast<int>(std::lround(s)));
    for (int k = 0; k < kSide; ++k) {  // along the keypoint's x axis
        const auto& wk = kWeights[static_cast<std::size_t>(k)];
        for (int m = 0; m < kSide; ++m) {  // along its y axis
            const auto& wm = kWeights[static_cast<std::size_t>(m)];
            const double u = (k - 11.5) * s, v = (m - 11.5) * s;
            const int x = static_cast<int>(std::lround(kp.pt.x + u * co - v * si));
            const int y = static_cast<int>(std::lround(kp.pt.y + u * si + v * co));
            double dx, dy;
            ii.haar(x, y, r, dx, dy);
            const double rx = dx * co + dy * si, ry = -dx * si + dy * co;
            for (int qi = 0; qi < 4; ++qi) {
                if (wk[static_cast<std::size_t>(qi)] == 0) continue;
                for (int qj = 0; qj < 4; ++qj) {
                    const double g =
                        wk[static_cast<std::size_t>(qi)] * wm[static_cast<std::size_t>(qj)];
                    if (g == 0) continue;
                    double* cell = acc.data() + (qj * 4 + qi) * per_region;
                    const double gx = g * rx, gy = g * ry;
                    if (!extended) {
                        cell[0] += gx;
                        cell[1] += gy;
                        cell[2] += std::abs(gx);
                        cell[3] += std::abs(gy);
                    } else {
                        // Sums of dx split by the sign of dy, and of dy by the sign of dx.
                        double* a = cell + (ry < 0 ? 0 : 2);
                        a[0] += gx;
                        a[1] += std::abs(gx);
                        double* b = cell + (rx < 0 ? 4 : 6);
                        b[0] += gy;
                        b[1] += std::abs(gy);
                    }
                }
            }
        }
    }
    const int dims = 16 * per_region;
    double norm = 0;
    for (int i = 0; i < dims; ++i) {
        acc[static_cast<std::size_t>(i)] *=
            kRegionWeights[static_cast<std::size_t>(i / per_region)];
        norm += acc[static_cast<std::size_t>(i)] * acc[static_cast<std::size_t>(i)];
    }
    const double inv = norm > 0 ? 1.0 / std::sqrt(norm) : 0.0;
    for (int i = 0; i < dims; ++i)
        out[i] = static_cast<float>(acc[static_cast<std::size_t>(i)] * inv);
}

}  // namespace

int descriptor_size(const Params& p) {
    return (p.extended ? 128 : 64) + (p.sign_weight > 0 ? 1 : 0);
}

void detect_and_describe(const cv::Mat& gray, const Params& p, std::vector<cv::KeyPoint>& keypoints,
                         cv::Mat& descriptors) {
    keypoints.clear();
    descriptors.release();
    CV_Assert(gray.empty() || gray.type() == CV_8UC1);
    if (gray.empty()) return;
    // A light blur first: box filters have hard edges, so on sharp image detail det(H) has jagged
    // peaks that move with the sampling phase. Not in the paper; measured +2 to +5 points of
    // matching score on Oxford boat and graf (docs/features.md).
    cv::Mat smooth = gray;
    if (p.presmooth > 0) {
        smooth = cv::Mat();
        cv::GaussianBlur(gray, smooth, cv::Size(), p.presmooth);
    }
    const Integral ii(smooth);

    std::vector<Detection> found;
    for (int o = 0; o < p.octaves; ++o) {
        const int step = p.init_step << o;
        // The smallest filter of the octave must fit somewhere, else larger octaves are pointless.
        if (filter_size(o, 0) >= std::min(gray.cols, gray.rows)) break;
        std::vector<Layer> layers(static_cast<std::size_t>(p.intervals));
        for (int i = 0; i < p.intervals; ++i) {
            Layer& layer = layers[static_cast<std::size_t>(i)];
            layer.size = filter_size(o, i);
            layer.step = step;
            layer.cols = gray.cols / step;
            layer.rows = gray.rows / step;
            compute_layer(ii, layer);
        }
        find_maxima(layers, o, p.hessian_threshold, found);
    }

    // Strongest first; ties broken by position and scale so the order never depends on threads.
    std::sort(found.begin(), found.end(), [](const Detection& a, const Detection& b) {
        if (a.kp.response != b.kp.response) return a.kp.response > b.kp.response;
        if (a.kp.pt.y != b.kp.pt.y) return a.kp.pt.y < b.kp.pt.y;
        if (a.kp.pt.x != b.kp.pt.x) return a.kp.pt.x < b.kp.pt.x;
        return a.scale < b.scale;
    });
    if (p.max_features > 0 && found.size() > static_cast<std::size_t>(p.max_features)) {
        std::vector<cv::Point2f> points;
        points.reserve(found.size());
        for (const auto& d : found) points.push_back(d.kp.pt);
        const auto keep = spread_over_grid(points, gray.size(), p.grid, static_cast<std::size_t>(p.max_features));
        std::vector<Detection> kept;
        kept.reserve(keep.size());
        for (auto i : keep) kept.push_back(found[i]);
        found = std::move(kept);
    }

    const int base = p.extended ? 128 : 64;
    const int cols = descriptor_size(p);
    descriptors.create(static_cast<int>(found.size()), cols, CV_32F);
    const float w = static_cast<float>(p.sign_weight);
    const float keep = w > 0 ? std::sqrt(1.f - w * w) : 1.f;
    cv::parallel_for_(cv::Range(0, static_cast<int>(found.size())), [&](const cv::Range& range) {
        for (int i = range.start; i < range.end; ++i) {
            Detection& d = found[static_cast<std::size_t>(i)];
            if (!p.upright) d.kp.angle = orientation(ii, d.kp.pt, d.scale);
            float* row = descriptors.ptr<float>(i);
            describe(ii, d.kp, d.scale, p.extended, row);
            if (w > 0) {
                for (int k = 0; k < base; ++k) row[k] *= keep;
                row[base] = w * static_cast<float>(d.kp.class_id);
            }
        }
    });
    keypoints.reserve(found.size());
    for (const auto& d : found) keypoints.push_back(d.kp);
}

}  // namespace sightline::surf
