#include "surf.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numbers>
#include <opencv2/core/hal/intrin.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>
#include <optional>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <sightline/keypoint_grid.hpp>

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

    // Row y of the integral image: entry x is the sum of the pixels above y and left of x.
    const double* row(int y) const { return p_ + static_cast<std::size_t>(y) * stride_; }
    // Haar wavelet responses of side 2r centred on the real point (x, y), in pixel coordinates
    // (pixel i covers [i - 0.5, i + 0.5]), for any real r > 0. Within a pixel the integral image
    // of a piecewise-constant image is bilinear, so interpolating it bilinearly gives the exact
    // sum over a box with real corners: no rounding of the position or the size. Rounding moved
    // the samples of the smallest blobs (s down to 1.6 px, their spacing) by up to a third of
    // their spacing, rounded a 3.2 px wavelet to 4, and the integer wavelets were centred half
    // a pixel up and left of their sample. The outside of the image counts as zero.
    // kClamp false is for wavelets known to lie inside the image (see contains()): the same
    // result without clamping each coordinate.
    template <bool kClamp>
    void haar(double x, double y, double r, double& dx, double& dy) const {
        const double x0 = x + 0.5 - r, y0 = y + 0.5 - r;
        std::array<int, 3> ix{}, iy{};
        std::array<double, 3> fx{}, fy{};
        for (std::size_t k = 0; k < 3; ++k) {
            if constexpr (kClamp) {
                split(x0 + static_cast<double>(k) * r, w_, ix[k], fx[k]);
                split(y0 + static_cast<double>(k) * r, h_, iy[k], fy[k]);
            } else {
                const double vx = x0 + static_cast<double>(k) * r,
                             vy = y0 + static_cast<double>(k) * r;
                ix[k] = static_cast<int>(vx);
                iy[k] = static_cast<int>(vy);
                fx[k] = vx - ix[k];
                fy[k] = vy - iy[k];
            }
        }
        // The integral at (x0 + i r, y0 + j r); the centre (1, 1) takes part in neither wavelet.
        auto at = [&](std::size_t j, std::size_t i) {
            const double* r0 = p_ + static_cast<std::size_t>(iy[j]) * stride_;
            const double* r1 = r0 + stride_;
            const auto c = static_cast<std::size_t>(ix[i]);
            const double a = r0[c] + fx[i] * (r0[c + 1] - r0[c]);
            const double b = r1[c] + fx[i] * (r1[c + 1] - r1[c]);
            return a + fy[j] * (b - a);
        };
        const double s00 = at(0, 0), s01 = at(0, 1), s02 = at(0, 2), s10 = at(1, 0), s12 = at(1, 2),
                     s20 = at(2, 0), s21 = at(2, 1), s22 = at(2, 2);
        const double right = s22 - s21 - s02 + s01;
        const double left = s21 - s20 - s01 + s00;
        const double bottom = s22 - s20 - s12 + s10;
        const double top = s12 - s10 - s02 + s00;
        dx = right - left;
        dy = bottom - top;
    }

    // haar<kClamp> at two points at once, (xs[0], ys[0]) and (xs[1], ys[1]), into dx[0..1] and
    // dy[0..1]: the same operations in the same order, one lane per point.
    template <bool kClamp>
    void haar_pair(const double* xs, const double* ys, double r, double* dx, double* dy) const {
#if CV_SIMD128_64F
        using cv::v_float64x2;
        const v_float64x2 vr = cv::v_setall_f64(r), half = cv::v_setall_f64(0.5);
        const v_float64x2 x0 = cv::v_load(xs) + half - vr, y0 = cv::v_load(ys) + half - vr;
        std::array<v_float64x2, 3> fx, fy;
        std::array<std::array<int, 4>, 3> ix{}, iy{};
        for (std::size_t k = 0; k < 3; ++k) {
            const v_float64x2 step = cv::v_setall_f64(static_cast<double>(k)) * vr;
            v_float64x2 vx = x0 + step, vy = y0 + step;
            if constexpr (kClamp) {  // as split()
                const v_float64x2 zero = cv::v_setzero_f64();
                vx = cv::v_min(cv::v_max(vx, zero), cv::v_setall_f64(static_cast<double>(w_)));
                vy = cv::v_min(cv::v_max(vy, zero), cv::v_setall_f64(static_cast<double>(h_)));
            }
            cv::v_int32x4 tx = cv::v_trunc(vx), ty = cv::v_trunc(vy);
            if constexpr (kClamp) {
                tx = cv::v_min(tx, cv::v_setall_s32(w_ - 1));
                ty = cv::v_min(ty, cv::v_setall_s32(h_ - 1));
            }
            cv::v_store(ix[k].data(), tx);
            cv::v_store(iy[k].data(), ty);
            fx[k] = vx - cv::v_cvt_f64(tx);
            fy[k] = vy - cv::v_cvt_f64(ty);
        }
        auto at = [&](std::size_t j, std::size_t i) {
            const double* a0 = p_ + static_cast<std::size_t>(iy[j][0]) * stride_ + ix[i][0];
            const double* b0 = p_ + static_cast<std::size_t>(iy[j][1]) * stride_ + ix[i][1];
            const double* a1 = a0 + stride_;
            const double* b1 = b0 + stride_;
            const v_float64x2 r0c(a0[0], b0[0]), r0n(a0[1], b0[1]), r1c(a1[0], b1[0]),
                r1n(a1[1], b1[1]);
            const v_float64x2 a = r0c + fx[i] * (r0n - r0c);
            const v_float64x2 b = r1c + fx[i] * (r1n - r1c);
            return a + fy[j] * (b - a);
        };
        const v_float64x2 s00 = at(0, 0), s01 = at(0, 1), s02 = at(0, 2), s10 = at(1, 0),
                          s12 = at(1, 2), s20 = at(2, 0), s21 = at(2, 1), s22 = at(2, 2);
        const v_float64x2 right = s22 - s21 - s02 + s01;
        const v_float64x2 left = s21 - s20 - s01 + s00;
        const v_float64x2 bottom = s22 - s20 - s12 + s10;
        const v_float64x2 top = s12 - s10 - s02 + s00;
        cv::v_store(dx, right - left);
        cv::v_store(dy, bottom - top);
#else
        for (std::size_t n = 0; n < 2; ++n) haar<kClamp>(xs[n], ys[n], r, dx[n], dy[n]);
#endif
    }

    // Whether every point within `radius` of (x, y) (pixel coordinates) is inside the image with a
    // pixel to spare, so that haar<false> may sample there.
    bool contains(double x, double y, double radius) const {
        return x - radius >= 0 && y - radius >= 0 && x + radius + 2 < w_ && y + radius + 2 < h_;
    }

    // The integral at the n x n points (x0 + i step, y0 + j step) of a lattice, in pixel-edge
    // coordinates (as haar()), row by row into `out`.
    void lattice(double x0, double y0, double step, int n, double* out) const {
        std::array<int, 64> ix{}, iy{};
        std::array<double, 64> fx{}, fy{};
        CV_Assert(n <= 64);
        for (int k = 0; k < n; ++k) {
            const auto uk = static_cast<std::size_t>(k);
            split(x0 + k * step, w_, ix[uk], fx[uk]);
            split(y0 + k * step, h_, iy[uk], fy[uk]);
        }
        for (int j = 0; j < n; ++j) {
            const auto uj = static_cast<std::size_t>(j);
            const double* r0 = p_ + static_cast<std::size_t>(iy[uj]) * stride_;
            const double* r1 = r0 + stride_;
            for (int i = 0; i < n; ++i) {
                const auto ui = static_cast<std::size_t>(i);
                const auto c = static_cast<std::size_t>(ix[ui]);
                const double f = fx[ui];
                out[j * n + i] = (r0[c] + f * (r0[c + 1] - r0[c])) * (1 - fy[uj]) +
                                 (r1[c] + f * (r1[c + 1] - r1[c])) * fy[uj];
            }
        }
    }

  private:
    // A pixel-edge coordinate clamped to [0, size] as the cell i it falls in and the fraction f
    // across it (the integral image has size + 1 entries per axis).
    static void split(double v, int size, int& i, double& f) {
        v = std::clamp(v, 0.0, static_cast<double>(size));
        i = std::min(static_cast<int>(v), size - 1);
        f = v - i;
    }

    cv::Mat sum_;
    const double* p_ = nullptr;
    std::size_t stride_ = 0;
    int w_ = 0, h_ = 0;
};

// Integral image in unsigned 32-bit arithmetic that wraps: a box's sum, a difference of four
// entries, comes out exact modulo 2^32, and no box under 2^24 pixels sums to that, so the box
// filters read exact sums from half the memory of the double integral, four to a SIMD register.
class WrappingIntegral {
  public:
    explicit WrappingIntegral(const cv::Mat& gray)
        : stride_(static_cast<std::size_t>(gray.cols) + 1),
          sum_(stride_ * (static_cast<std::size_t>(gray.rows) + 1), 0u) {
        for (int y = 0; y < gray.rows; ++y) {
            const std::uint8_t* src = gray.ptr<std::uint8_t>(y);
            const std::uint32_t* above = row(y);
            std::uint32_t* out = sum_.data() + static_cast<std::size_t>(y + 1) * stride_;
            std::uint32_t run = 0;
            for (int x = 0; x < gray.cols; ++x) {
                run += src[x];
                out[x + 1] = above[x + 1] + run;
            }
        }
    }
    const std::uint32_t* row(int y) const {
        return sum_.data() + static_cast<std::size_t>(y) * stride_;
    }

  private:
    std::size_t stride_;
    std::vector<std::uint32_t> sum_;
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
    // rows x cols, 0 where the filter does not fit. Not initialised on allocation: compute_layer
    // writes every entry, row by row on all cores, so the pages are first touched in parallel.
    std::unique_ptr<float[]> det;
    std::unique_ptr<signed char[]> trace_sign;

    float at(int r, int c) const {
        return det[static_cast<std::size_t>(r) * static_cast<std::size_t>(cols) +
                   static_cast<std::size_t>(c)];
    }
};

// The integral image rows a box filter row reads (see compute_layer).
struct FilterRows {
    const std::uint32_t *xx0, *xx1, *yy0, *yy1, *ym0, *ym1, *xy0, *xy1, *xy2, *xy3;
};

#if defined(__x86_64__) || defined(__i386__)
// Eight box sums (columns x .. x + 7 of the row pair's box [x0, x1)), exact modulo 2^32.
__attribute__((target("avx2"))) inline __m256i box8(const std::uint32_t* top,
                                                    const std::uint32_t* bottom, int x0, int x1) {
    const auto at = [](const std::uint32_t* p, int x) {
        return reinterpret_cast<const __m256i*>(p + x);
    };
    return _mm256_add_epi32(_mm256_sub_epi32(_mm256_sub_epi32(_mm256_loadu_si256(at(bottom, x1)),
                                                              _mm256_loadu_si256(at(top, x1))),
                                             _mm256_loadu_si256(at(bottom, x0))),
                            _mm256_loadu_si256(at(top, x0)));
}

// det(H) of four columns from their integer Dxx, Dyy, Dxy, as the 4-wide path computes it.
__attribute__((target("avx2"))) inline __m128 det4(__m128i xx, __m128i yy, __m128i xy,
                                                   __m256d scale) {
    const __m256d nxx = _mm256_mul_pd(_mm256_cvtepi32_pd(xx), scale),
                  nyy = _mm256_mul_pd(_mm256_cvtepi32_pd(yy), scale),
                  nxy = _mm256_mul_pd(_mm256_cvtepi32_pd(xy), scale);
    return _mm256_cvtpd_ps(_mm256_sub_pd(
        _mm256_mul_pd(nxx, nyy), _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.81), nxy), nxy)));
}

// compute_layer's step-1 row (the first octave, most of the box filters' work) eight columns at a
// time where the CPU has AVX2; the package is built for the x86-64 baseline, which stops at 128-bit
// SIMD. The same exact integer sums, then the same double operations in the same order as the
// 4-wide path (no fused multiply-adds), so the output is the same to the bit. Returns the first
// column not done.
__attribute__((target("avx2"))) int filter_row_avx2(const FilterRows& f, int c, int c_end, int half,
                                                    int l, int m, double inv_area, float* det,
                                                    signed char* sign) {
    const __m256d scale = _mm256_set1_pd(inv_area);
    for (; c + 7 <= c_end; c += 8) {
        const __m256i mxx = box8(f.xx0, f.xx1, c - m, c + m + 1),
                      myy = box8(f.ym0, f.ym1, c + 1 - l, c + l);
        const __m256i dxx = _mm256_sub_epi32(
            _mm256_sub_epi32(_mm256_sub_epi32(box8(f.xx0, f.xx1, c - half, c + half + 1), mxx),
                             mxx),
            mxx);
        const __m256i dyy = _mm256_sub_epi32(
            _mm256_sub_epi32(_mm256_sub_epi32(box8(f.yy0, f.yy1, c + 1 - l, c + l), myy), myy),
            myy);
        const __m256i dxy = _mm256_sub_epi32(
            _mm256_sub_epi32(_mm256_add_epi32(box8(f.xy0, f.xy1, c - l, c),
                                              box8(f.xy2, f.xy3, c + 1, c + 1 + l)),
                             box8(f.xy0, f.xy1, c + 1, c + 1 + l)),
            box8(f.xy2, f.xy3, c - l, c));
        _mm_storeu_ps(det + c, det4(_mm256_castsi256_si128(dxx), _mm256_castsi256_si128(dyy),
                                    _mm256_castsi256_si128(dxy), scale));
        _mm_storeu_ps(det + c + 4,
                      det4(_mm256_extracti128_si256(dxx, 1), _mm256_extracti128_si256(dyy, 1),
                           _mm256_extracti128_si256(dxy, 1), scale));
        alignas(32) std::array<std::int32_t, 8> trace{};
        _mm256_store_si256(reinterpret_cast<__m256i*>(trace.data()), _mm256_add_epi32(dxx, dyy));
        for (std::size_t k = 0; k < 8; ++k)
            sign[static_cast<std::size_t>(c) + k] = trace[k] >= 0 ? 1 : -1;
    }
    return c;
}
#endif

// Area-normalised box approximations of Lxx, Lyy, Lxy, and det(H) = Dxx Dyy - (0.9 Dxy)^2. The box
// sums are integers, so the double arithmetic after them gives the same det(H) whichever path
// (SIMD or scalar) computed the sums.
void compute_layer(const WrappingIntegral& ii, int W, int H, Layer& layer) {
    const int L = layer.size, half = (L - 1) / 2, l = L / 3, m = (l - 1) / 2;
    const int step = layer.step;
    const std::size_t cols = static_cast<std::size_t>(layer.cols);
    layer.det =
        std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(layer.rows) * cols);
    layer.trace_sign =
        std::make_unique_for_overwrite<signed char[]>(static_cast<std::size_t>(layer.rows) * cols);
    const double inv_area = 1.0 / (static_cast<double>(L) * L);
#if defined(__x86_64__) || defined(__i386__)
    // OpenCV's view of the CPU: OPENCV_CPU_DISABLE=AVX2 turns this path off as it does OpenCV's
    // own.
    const bool avx2 = cv::checkHardwareSupport(CV_CPU_AVX2);
#endif
    // The columns where the filter fits.
    const int c0 = (half + step - 1) / step, c1 = std::min(layer.cols - 1, (W - 1 - half) / step);
    cv::parallel_for_(cv::Range(0, layer.rows), [&](const cv::Range& range) {
        for (int r = range.start; r < range.end; ++r) {
            const int y = r * step;
            float* det = layer.det.get() + static_cast<std::size_t>(r) * cols;
            signed char* sign = layer.trace_sign.get() + static_cast<std::size_t>(r) * cols;
            if (y - half < 0 || y + half >= H || c1 < c0) {
                std::fill_n(det, cols, 0.f);
                std::fill_n(sign, cols, 0);
                continue;
            }
            std::fill_n(det, c0, 0.f);
            std::fill_n(sign, c0, 0);
            std::fill(det + c1 + 1, det + cols, 0.f);
            std::fill(sign + c1 + 1, sign + cols, 0);
            // The integral image rows each lobe starts and ends on (a box [x0, x1) x [y0, y1)
            // sums to I(y1, x1) - I(y0, x1) - I(y1, x0) + I(y0, x0)).
            const std::uint32_t *xx0 = ii.row(y - l + 1), *xx1 = ii.row(y + l);        // Dxx band
            const std::uint32_t *yy0 = ii.row(y - half), *yy1 = ii.row(y + half + 1);  // Dyy band
            const std::uint32_t *ym0 = ii.row(y - m), *ym1 = ii.row(y + m + 1);        // Dyy middle
            const std::uint32_t *xy0 = ii.row(y - l), *xy1 = ii.row(y), *xy2 = ii.row(y + 1),
                                *xy3 = ii.row(y + 1 + l);  // Dxy quadrants
            int c = c0;
#if defined(__x86_64__) || defined(__i386__)
            if (step == 1 && avx2)
                c = filter_row_avx2({xx0, xx1, yy0, yy1, ym0, ym1, xy0, xy1, xy2, xy3}, c, c1, half,
                                    l, m, inv_area, det, sign);
#endif
#if CV_SIMD128_64F
            // Four columns at once: at steps 1 and 2 their integral entries are four in a row or
            // every other one of eight; coarser octaves have few samples and stay scalar.
            if (step <= 2) {
                const cv::v_float64x2 scale = cv::v_setall_f64(inv_area),
                                      k081 = cv::v_setall_f64(0.81);
                auto load = [step](const std::uint32_t* p) {
                    if (step == 1) return cv::v_load(p);
                    cv::v_uint32x4 even, odd;
                    cv::v_load_deinterleave(p, even, odd);
                    return even;
                };
                // A step-2 load reads eight entries: the last must stay inside the row.
                const int c_end = step == 1 ? c1 : std::min(c1, (W - half - 2) / 2);
                for (; c + 3 <= c_end; c += 4) {
                    const int x = c * step;
                    auto box = [&](const std::uint32_t* top, const std::uint32_t* bottom, int x0,
                                   int x1) {
                        return load(bottom + x + x1) - load(top + x + x1) - load(bottom + x + x0) +
                               load(top + x + x0);
                    };
                    // Three lobes, weights +1 -2 +1: the whole band minus 3 x the middle.
                    const cv::v_uint32x4 mxx = box(xx0, xx1, -m, m + 1),
                                         myy = box(ym0, ym1, 1 - l, l);
                    const cv::v_int32x4 dxx =
                        cv::v_reinterpret_as_s32(box(xx0, xx1, -half, half + 1) - mxx - mxx - mxx);
                    const cv::v_int32x4 dyy =
                        cv::v_reinterpret_as_s32(box(yy0, yy1, 1 - l, l) - myy - myy - myy);
                    const cv::v_int32x4 dxy =
                        cv::v_reinterpret_as_s32(box(xy0, xy1, -l, 0) + box(xy2, xy3, 1, 1 + l) -
                                                 box(xy0, xy1, 1, 1 + l) - box(xy2, xy3, -l, 0));
                    auto det2 = [&](const cv::v_float64x2& xx, const cv::v_float64x2& yy,
                                    const cv::v_float64x2& xy) {
                        const cv::v_float64x2 nxx = xx * scale, nyy = yy * scale, nxy = xy * scale;
                        return nxx * nyy - k081 * nxy * nxy;
                    };
                    cv::v_store(det + c,
                                cv::v_cvt_f32(det2(cv::v_cvt_f64(dxx), cv::v_cvt_f64(dyy),
                                                   cv::v_cvt_f64(dxy)),
                                              det2(cv::v_cvt_f64_high(dxx), cv::v_cvt_f64_high(dyy),
                                                   cv::v_cvt_f64_high(dxy))));
                    // nxx + nyy has the sign of the integer dxx + dyy (one positive scale).
                    std::array<std::int32_t, 4> trace{};
                    cv::v_store(trace.data(), dxx + dyy);
                    for (std::size_t k = 0; k < 4; ++k)
                        sign[static_cast<std::size_t>(c) + k] = trace[k] >= 0 ? 1 : -1;
                }
            }
#endif
            auto box = [](const std::uint32_t* top, const std::uint32_t* bottom, int x0, int x1) {
                return bottom[x1] - top[x1] - bottom[x0] + top[x0];
            };
            for (; c <= c1; ++c) {
                const int x = c * step;
                const auto dxx = static_cast<std::int32_t>(box(xx0, xx1, x - half, x + half + 1) -
                                                           3 * box(xx0, xx1, x - m, x + m + 1));
                const auto dyy = static_cast<std::int32_t>(box(yy0, yy1, x - l + 1, x + l) -
                                                           3 * box(ym0, ym1, x - l + 1, x + l));
                const auto dxy = static_cast<std::int32_t>(
                    box(xy0, xy1, x - l, x) + box(xy2, xy3, x + 1, x + 1 + l) -
                    box(xy0, xy1, x + 1, x + 1 + l) - box(xy2, xy3, x - l, x));
                const double nxx = dxx * inv_area, nyy = dyy * inv_area, nxy = dxy * inv_area;
                det[c] = static_cast<float>(nxx * nyy - 0.81 * nxy * nxy);
                sign[c] = dxx + dyy >= 0 ? 1 : -1;
            }
        }
    });
}

struct Detection {
    cv::KeyPoint kp;
    float scale = 0;  // s = 1.2 L / 9
};

// Sample (r, c) of `mid` as a keypoint if it is above the threshold and beats its 26 neighbours,
// refined by fitting a 3D quadratic (Brown and Lowe 2002) in x, y and filter size.
std::optional<Detection> maximum_at(const Layer& below, const Layer& mid, const Layer& above, int r,
                                    int c, int octave, double threshold) {
    const int step = mid.step;
    const float v = mid.at(r, c);
    if (v <= threshold) return std::nullopt;
    bool is_max = true;
    for (int dr = -1; dr <= 1 && is_max; ++dr)
        for (int dc = -1; dc <= 1 && is_max; ++dc) {
            if (below.at(r + dr, c + dc) >= v || above.at(r + dr, c + dc) >= v) is_max = false;
            if ((dr != 0 || dc != 0) && mid.at(r + dr, c + dc) >= v) is_max = false;
        }
    if (!is_max) return std::nullopt;

    const double gx = (mid.at(r, c + 1) - mid.at(r, c - 1)) / 2.0;
    const double gy = (mid.at(r + 1, c) - mid.at(r - 1, c)) / 2.0;
    const double gs = (above.at(r, c) - below.at(r, c)) / 2.0;
    const double hxx = mid.at(r, c + 1) + mid.at(r, c - 1) - 2.0 * v;
    const double hyy = mid.at(r + 1, c) + mid.at(r - 1, c) - 2.0 * v;
    const double hss = above.at(r, c) + below.at(r, c) - 2.0 * v;
    const double hxy = (mid.at(r + 1, c + 1) - mid.at(r + 1, c - 1) - mid.at(r - 1, c + 1) +
                        mid.at(r - 1, c - 1)) /
                       4.0;
    const double hxs =
        (above.at(r, c + 1) - above.at(r, c - 1) - below.at(r, c + 1) + below.at(r, c - 1)) / 4.0;
    const double hys =
        (above.at(r + 1, c) - above.at(r - 1, c) - below.at(r + 1, c) + below.at(r - 1, c)) / 4.0;
    const cv::Matx33d hess(hxx, hxy, hxs, hxy, hyy, hys, hxs, hys, hss);
    const cv::Vec3d grad(gx, gy, gs);
    if (std::abs(cv::determinant(hess)) < 1e-12) return std::nullopt;
    const cv::Vec3d fit = hess.solve(-grad, cv::DECOMP_LU);
    // The sample beats its 26 neighbours, so the peak is taken to be nearer to
    // it than to any of them: the fit is held to half a sample. Box-filter
    // responses are far from quadratic, so fits often land further out;
    // rejecting those, as one would in a smooth scale space, threw away a fifth
    // of the repeatable blobs (Oxford boat 1-2 matching score 0.43 -> 0.49 with
    // them kept).
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
    d.kp.class_id =
        mid.trace_sign[static_cast<std::size_t>(r) * static_cast<std::size_t>(mid.cols) +
                       static_cast<std::size_t>(c)];
    d.kp.angle = 0;
    return d;
}

// 3x3x3 maxima of det(H) above the threshold in the detection layers of one octave (maximum_at).
void find_maxima(const std::vector<Layer>& layers, int octave, double threshold,
                 std::vector<Detection>& out) {
    const int n = static_cast<int>(layers.size());
#if CV_SIMD128
    float t = static_cast<float>(threshold);
    if (static_cast<double>(t) > threshold)
        t = std::nextafter(t, -std::numeric_limits<float>::infinity());
    const cv::v_float32x4 floor_threshold = cv::v_setall_f32(t);
#endif
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
        // Bands of rows on all cores, each into its own list; joined in band order, so the
        // output does not depend on the threads.
        constexpr int kBandRows = 16;
        const int bands = hi_r >= lo ? (hi_r - lo) / kBandRows + 1 : 0;
        std::vector<std::vector<Detection>> found(static_cast<std::size_t>(bands));
        cv::parallel_for_(cv::Range(0, bands), [&](const cv::Range& range) {
            for (int band = range.start; band < range.end; ++band) {
                std::vector<Detection>& band_out = found[static_cast<std::size_t>(band)];
                for (int r = lo + band * kBandRows;
                     r <= std::min(hi_r, lo + (band + 1) * kBandRows - 1); ++r) {
                    auto consider = [&](int c) {
                        if (auto d = maximum_at(below, mid, above, r, c, octave, threshold))
                            band_out.push_back(*d);
                    };
                    int c = lo;
#if CV_SIMD128
                    // Most samples are below the threshold or below a neighbour in their row: four
                    // at a time are ruled out on those before the full test. The float threshold
                    // is rounded down, so no sample the test would take is ruled out.
                    const float* row = mid.det.get() + static_cast<std::size_t>(r) *
                                                           static_cast<std::size_t>(mid.cols);
                    for (; c + 3 <= hi_c; c += 4) {
                        const cv::v_float32x4 v = cv::v_load(row + c);
                        const cv::v_float32x4 candidates = (v > floor_threshold) &
                                                           (v > cv::v_load(row + c - 1)) &
                                                           (v > cv::v_load(row + c + 1));
                        if (!cv::v_check_any(candidates)) continue;
                        for (int k = 0; k < 4; ++k) consider(c + k);
                    }
#endif
                    for (; c <= hi_c; ++c) consider(c);
                }
            }
        });
        for (const auto& band : found) out.insert(out.end(), band.begin(), band.end());
    }
}

constexpr double kPi = std::numbers::pi;

// atan2 to within 1e-5 radians (a minimax polynomial for atan on [0, 1]), for binning angles.
// Written with selects, not branches, so that a loop over many angles vectorises.
double fast_atan2(double y, double x) {
    const double ax = std::abs(x), ay = std::abs(y);
    const double mx = std::max(ax, ay);
    const double z = mx > 0 ? std::min(ax, ay) / mx : 0.0, z2 = z * z;
    double a =
        z * (0.9998660 + z2 * (-0.3302995 + z2 * (0.1801410 + z2 * (-0.0851330 + z2 * 0.0208351))));
    a = ay > ax ? kPi / 2 - a : a;
    a = x < 0 ? kPi - a : a;
    return y < 0 ? -a : a;
}

// Dominant orientation: Haar responses (side 4s) in a disc of radius 6s, Gaussian weighted
// (sigma 2s), summed inside a window of pi/3 slid around the circle in steps of 5 degrees; the
// longest sum gives the angle. The paper samples the disc every s; we sample it every s / 2
// (437 responses instead of 113): the wavelets are 4s wide, so samples s apart alias, and the
// angle moved with the sampling phase (median error against the ground truth on Oxford graf
// 1-2, 20 degrees of viewpoint: 6.2 -> 5.8 degrees, errors over 20 degrees 15% -> 12%). The
// samples and their wavelets' corners then lie on one lattice of spacing s / 2, whose integral
// values are interpolated once (33 x 33 points), not 9 times per response.
float orientation(const Integral& ii, const cv::Point2f& pt, float s) {
    constexpr int kR = 12;    // disc radius in samples (6s at s / 2)
    constexpr int kHalf = 4;  // wavelet half side in samples (2s)
    constexpr int kN = 2 * (kR + kHalf) + 1;
    constexpr int kBins = 72;           // 5 degrees each: the window starts on a bin edge
    constexpr int kWindow = kBins / 6;  // pi / 3
    static const auto kGauss = [] {     // sigma 2s = 4 samples
        std::array<double, (2 * kR + 1) * (2 * kR + 1)> g{};
        for (int j = -kR; j <= kR; ++j)
            for (int i = -kR; i <= kR; ++i)
                g[static_cast<std::size_t>((j + kR) * (2 * kR + 1) + i + kR)] =
                    i * i + j * j < kR * kR ? std::exp(-(i * i + j * j) / (2.0 * 16.0)) : 0.0;
        return g;
    }();
    std::array<double, kN * kN> S;
    const double h = 0.5 * s;
    ii.lattice(pt.x + 0.5 - (kR + kHalf) * h, pt.y + 0.5 - (kR + kHalf) * h, h, kN, S.data());
    auto at = [&](int i, int j) {  // lattice point of sample offset (i, j)
        return S[static_cast<std::size_t>((j + kR + kHalf) * kN + i + kR + kHalf)];
    };
    // The responses inside the disc (437 of the 25 x 25 samples; those outside weigh 0 and never
    // counted), row by row into one run, then their bins, then the histogram in that order: the
    // first two loops vectorise, and the histogram adds up in the order one loop over the whole
    // square, skipping zero responses, would.
    static const auto kSpan = [] {  // per row j + kR: the disc's half width in samples, -1 if none
        std::array<int, 2 * kR + 1> w{};
        for (int j = -kR; j <= kR; ++j) {
            int i = -1;
            while ((i + 1) * (i + 1) + j * j < kR * kR) ++i;
            w[static_cast<std::size_t>(j + kR)] = i;
        }
        return w;
    }();
    constexpr int kD = 2 * kR + 1;
    std::array<double, kD * kD> dxs, dys;
    std::size_t n = 0;
    for (int j = -kR; j <= kR; ++j) {
        const int w = kSpan[static_cast<std::size_t>(j + kR)];
        for (int i = -w; i <= w; ++i, ++n) {
            const double g = kGauss[static_cast<std::size_t>((j + kR) * kD + i + kR)];
            const int l = i - kHalf, r = i + kHalf, t = j - kHalf, b = j + kHalf;
            const double right = at(r, b) - at(i, b) - at(r, t) + at(i, t);
            const double left = at(i, b) - at(l, b) - at(i, t) + at(l, t);
            const double bottom = at(r, b) - at(l, b) - at(r, j) + at(l, j);
            const double top = at(r, j) - at(l, j) - at(r, t) + at(l, t);
            dxs[n] = g * (right - left);
            dys[n] = g * (bottom - top);
        }
    }
    std::array<int, kD * kD> bins;
    for (std::size_t idx = 0; idx < n; ++idx) {
        // Bin k holds the angles [-pi + k 5deg, -pi + (k + 1) 5deg); the angle is at least -pi,
        // so truncation is floor.
        const auto k = static_cast<int>((fast_atan2(dys[idx], dxs[idx]) + kPi) * kBins / (2 * kPi));
        bins[idx] = std::min(k, kBins - 1);
    }
    std::array<double, kBins> bx{}, by{};
    for (std::size_t idx = 0; idx < n; ++idx) {
        if (dxs[idx] == 0 && dys[idx] == 0) continue;
        bx[static_cast<std::size_t>(bins[idx])] += dxs[idx];
        by[static_cast<std::size_t>(bins[idx])] += dys[idx];
    }
    // Every window's sums at once, each still added up from its first bin on (the bins wrap round
    // into a second copy), so the vectoriser gets independent sums and the result stays the same.
    std::array<double, kBins + kWindow> wx{}, wy{};
    std::copy(bx.begin(), bx.end(), wx.begin());
    std::copy(bx.begin(), bx.begin() + kWindow, wx.begin() + kBins);
    std::copy(by.begin(), by.end(), wy.begin());
    std::copy(by.begin(), by.begin() + kWindow, wy.begin() + kBins);
    std::array<double, kBins> sx{}, sy{};
    for (std::size_t k = 0; k < kWindow; ++k)
        for (std::size_t w = 0; w < kBins; ++w) {
            sx[w] += wx[w + k];
            sy[w] += wy[w + k];
        }
    double best_len = -1, best_x = 0, best_y = 0;
    for (std::size_t w = 0; w < kBins; ++w) {
        const double len = sx[w] * sx[w] + sy[w] * sy[w];
        if (len > best_len) {
            best_len = len;
            best_x = sx[w];
            best_y = sy[w];
        }
    }
    double deg = std::atan2(best_y, best_x) * 180.0 / kPi;
    if (deg < 0) deg += 360.0;
    return deg >= 360.0 ? 0.f : static_cast<float>(deg);
}

// 4x4 sub-regions over a square of side 24s turned to the keypoint's angle, each summing Haar
// responses (side 2s, turned into that frame) at 9x9 samples spaced s. Neighbouring sub-regions
// overlap by 4 samples and each weighs its samples with a Gaussian (sigma 2.5s) about its own
// centre, then the sub-regions are weighted by a Gaussian (sigma 1.5 sub-regions) about the
// keypoint: a sample moving across a sub-region border then changes the descriptor smoothly, not
// by a jump. This is the overlapping variant of Agrawal, Konolige and Blas (ECCV 2008, "M-SURF");
// the paper's original has disjoint 5x5 samples and one Gaussian of sigma 3.3s.
template <int kPerRegion>
void describe(const Integral& ii, const cv::KeyPoint& kp, float s, float* out) {
    constexpr int kSide = 24;  // sample positions per axis, at (k - 11.5) s
    // Sub-region q covers samples 5q .. 5q + 8 of an axis; sample 5q + t weighs kTap[t] in it.
    constexpr int kTaps = 9;
    static const auto kTap = [] {
        std::array<double, kTaps> w{};
        for (int t = 0; t < kTaps; ++t)
            w[static_cast<std::size_t>(t)] = std::exp(-(t - 4.0) * (t - 4.0) / (2 * 2.5 * 2.5));
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
    constexpr auto P = static_cast<std::size_t>(kPerRegion);
    // Each sample's terms (row m, column k), then their weighted sums along k per sub-region
    // column, then along m: the Gaussian weights are separable, so this sums what weighting each
    // sample into its (up to four) sub-regions would, with a quarter of the multiplications.
    std::array<double, kSide * kSide * P> terms;
    const double theta = kp.angle * kPi / 180.0, co = std::cos(theta), si = std::sin(theta);
    // The farthest wavelet corner: a corner sample 11.5 s from the centre on both axes, plus s.
    const bool inside = ii.contains(kp.pt.x, kp.pt.y, (11.5 * std::numbers::sqrt2 + 1.0) * s + 1.0);
    // Wavelet responses first, two at a time (clamped to the image only near its border), then
    // their terms.
    constexpr std::size_t kSamples = kSide * kSide;
    std::array<double, kSamples> xs, ys, hx, hy;
    for (int m = 0; m < kSide; ++m)        // along the keypoint's y axis
        for (int k = 0; k < kSide; ++k) {  // along its x axis
            const double u = (k - 11.5) * s, v = (m - 11.5) * s;
            const auto n = static_cast<std::size_t>(m * kSide + k);
            xs[n] = kp.pt.x + u * co - v * si;
            ys[n] = kp.pt.y + u * si + v * co;
        }
    for (std::size_t n = 0; n < kSamples; n += 2) {
        if (inside)
            ii.haar_pair<false>(xs.data() + n, ys.data() + n, s, hx.data() + n, hy.data() + n);
        else
            ii.haar_pair<true>(xs.data() + n, ys.data() + n, s, hx.data() + n, hy.data() + n);
    }
    for (int m = 0; m < kSide; ++m) {
        for (int k = 0; k < kSide; ++k) {
            const auto n = static_cast<std::size_t>(m * kSide + k);
            const double dx = hx[n], dy = hy[n];
            const double rx = dx * co + dy * si, ry = -dx * si + dy * co;
            double* t = terms.data() + static_cast<std::size_t>(m * kSide + k) * P;
            if constexpr (kPerRegion == 4) {
                t[0] = rx;
                t[1] = ry;
                t[2] = std::abs(rx);
                t[3] = std::abs(ry);
            } else {
                // Sums of dx split by the sign of dy, and of dy by the sign of dx.
                const bool ry_neg = ry < 0, rx_neg = rx < 0;
                t[0] = ry_neg ? rx : 0;
                t[1] = ry_neg ? std::abs(rx) : 0;
                t[2] = ry_neg ? 0 : rx;
                t[3] = ry_neg ? 0 : std::abs(rx);
                t[4] = rx_neg ? ry : 0;
                t[5] = rx_neg ? std::abs(ry) : 0;
                t[6] = rx_neg ? 0 : ry;
                t[7] = rx_neg ? 0 : std::abs(ry);
            }
        }
    }
    std::array<double, kSide * 4 * P> rows{};  // [m][sub-region column][term]
    for (std::size_t m = 0; m < kSide; ++m)
        for (std::size_t q = 0; q < 4; ++q) {
            double* r = rows.data() + (m * 4 + q) * P;
            for (std::size_t t = 0; t < kTaps; ++t) {
                const double* src = terms.data() + (m * kSide + 5 * q + t) * P;
                for (std::size_t e = 0; e < P; ++e) r[e] += kTap[t] * src[e];
            }
        }
    std::array<double, 16 * P> acc{};  // [sub-region row][sub-region column][term]
    for (std::size_t qy = 0; qy < 4; ++qy)
        for (std::size_t t = 0; t < kTaps; ++t) {
            const double* src = rows.data() + (5 * qy + t) * 4 * P;
            double* a = acc.data() + qy * 4 * P;
            for (std::size_t e = 0; e < 4 * P; ++e) a[e] += kTap[t] * src[e];
        }
    constexpr std::size_t dims = 16 * P;
    double norm = 0;
    for (std::size_t i = 0; i < dims; ++i) {
        acc[i] *= kRegionWeights[i / P];
        norm += acc[i] * acc[i];
    }
    const double inv = norm > 0 ? 1.0 / std::sqrt(norm) : 0.0;
    for (std::size_t i = 0; i < dims; ++i) out[i] = static_cast<float>(acc[i] * inv);
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
    // The two integral images are each one pass down the image, serial within; side by side they
    // take the time of the longer.
    std::optional<Integral> ii_storage;
    std::optional<WrappingIntegral> boxes_storage;
    cv::parallel_for_(cv::Range(0, 2), [&](const cv::Range& range) {
        for (int k = range.start; k < range.end; ++k) {
            if (k == 0)
                ii_storage.emplace(smooth);
            else
                boxes_storage.emplace(smooth);
        }
    });
    const Integral& ii = *ii_storage;
    const WrappingIntegral& boxes = *boxes_storage;

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
            compute_layer(boxes, gray.cols, gray.rows, layer);
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
    // Described in bands across the image, octave by octave, not strongest first: neighbours read
    // the same stretch of the integral image while it is in cache (7% less time at 3,000 features
    // on 1536 x 1152). Each still writes its own row, so the output order is unchanged.
    std::vector<int> order(found.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        const auto& pa = found[static_cast<std::size_t>(a)].kp.pt;
        const auto& pb = found[static_cast<std::size_t>(b)].kp.pt;
        const int oa = found[static_cast<std::size_t>(a)].kp.octave,
                  ob = found[static_cast<std::size_t>(b)].kp.octave;
        if (oa != ob) return oa < ob;
        const int ba = static_cast<int>(pa.y) / (32 << oa),
                  bb = static_cast<int>(pb.y) / (32 << ob);
        if (ba != bb) return ba < bb;
        return pa.x < pb.x;
    });
    cv::parallel_for_(cv::Range(0, static_cast<int>(found.size())), [&](const cv::Range& range) {
        for (int o = range.start; o < range.end; ++o) {
            const int i = order[static_cast<std::size_t>(o)];
            Detection& d = found[static_cast<std::size_t>(i)];
            if (!p.upright) d.kp.angle = orientation(ii, d.kp.pt, d.scale);
            float* row = descriptors.ptr<float>(i);
            if (p.extended)
                describe<8>(ii, d.kp, d.scale, row);
            else
                describe<4>(ii, d.kp, d.scale, row);
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
