#pragma once
// SURF (Bay, Ess, Tuytelaars, Van Gool: "Speeded-Up Robust Features", CVIU 110(3), 2008), written
// from the paper: box-filter Hessian over an integral image, Haar-wavelet orientation and
// descriptor.
#include <opencv2/core.hpp>
#include <vector>

namespace sightline::surf {

struct Params {
    double hessian_threshold =
        100;  // on det(H) of area-normalised box responses, intensities 0..255
    int octaves = 4;
    int intervals = 4;       // filter sizes per octave; intervals-2 of them are detection layers
    int init_step = 1;       // sampling step of the first octave in pixels (doubles per octave)
    bool extended = false;   // 128-dimensional descriptor
    bool upright = false;    // skip orientation (U-SURF)
    int max_features = 0;    // keep the strongest; 0 keeps all
    int grid = 1;            // > 1: the strongest per cell of a grid x grid layout (see keypoint_grid.hpp)
    double sign_weight = 0;  // > 0: append the Laplacian sign as an extra dimension (see below)
    double presmooth =
        1.0;  // Gaussian sigma applied before the integral image (0: none, as the paper)
};

// Descriptor width for these parameters: 64 or 128, plus one when sign_weight > 0.
int descriptor_size(const Params& p);

// Keypoints and descriptors (CV_32F, one unit-length row per keypoint) of an 8-bit grayscale
// image. KeyPoint fields: pt (sub-pixel), size = 2s where s = 1.2 L / 9 is the paper's scale of
// the (interpolated) filter size L; for a Gaussian blob of sigma it comes out at 0.72 sigma, angle
// in degrees (0 when upright), response = det(H), octave, class_id = sign of the Laplacian (+1: a
// dark blob on a bright ground, -1: a bright one). With sign_weight w > 0 the descriptor is scaled
// by sqrt(1 - w^2) and the sign times w is appended: still unit length, and a pair of opposite
// signs is 2w further apart in L2, so any L2 matcher uses the sign without knowing about it.
// Deterministic: the same image gives the same output, whatever the thread count.
void detect_and_describe(const cv::Mat& gray, const Params& p, std::vector<cv::KeyPoint>& keypoints,
                         cv::Mat& descriptors);

}  // namespace sightline::surf
