// Writes the seed corpus of fuzz_decode into the directory given as argv[1]: a few small valid
// images in every supported format (JPEG baseline/progressive/grayscale, PNG gray/colour/16-bit,
// WebP lossy/lossless, BMP), so the fuzzer starts from inputs that reach the decoders.
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

bool write(const std::string& dir, const std::string& name, const cv::Mat& img, const std::string& ext,
           const std::vector<int>& params = {}) {
    std::vector<unsigned char> buf;
    if (!cv::imencode(ext, img, buf, params)) {
        std::fprintf(stderr, "decode_seeds: cannot encode %s\n", name.c_str());
        return false;
    }
    std::ofstream out(dir + "/" + name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
    return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    // A small textured picture: gradients, a few shapes and some noise, so the encoders produce
    // non-trivial data.
    cv::Mat color(24, 40, CV_8UC3);
    for (int y = 0; y < color.rows; ++y)
        for (int x = 0; x < color.cols; ++x)
            color.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<unsigned char>(x * 6), static_cast<unsigned char>(y * 10),
                                                  static_cast<unsigned char>((x * y) & 0xFF));
    cv::circle(color, {20, 12}, 7, {255, 255, 255}, 2);
    cv::rectangle(color, {3, 3}, {12, 9}, {0, 0, 0}, cv::FILLED);
    cv::Mat gray;
    cv::cvtColor(color, gray, cv::COLOR_BGR2GRAY);
    cv::Mat gray16;
    gray.convertTo(gray16, CV_16U, 257.0);
    cv::Mat tall;
    cv::transpose(color, tall);

    bool ok = true;
    ok &= write(dir, "baseline.jpg", color, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 80});
    ok &= write(dir, "progressive.jpg", color, ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1, cv::IMWRITE_JPEG_QUALITY, 60});
    ok &= write(dir, "restart.jpg", tall, ".jpg", {cv::IMWRITE_JPEG_RST_INTERVAL, 1, cv::IMWRITE_JPEG_QUALITY, 70});
    ok &= write(dir, "gray.jpg", gray, ".jpg", {cv::IMWRITE_JPEG_QUALITY, 90});
    ok &= write(dir, "color.png", color, ".png");
    ok &= write(dir, "gray.png", gray, ".png", {cv::IMWRITE_PNG_COMPRESSION, 9});
    ok &= write(dir, "gray16.png", gray16, ".png");
    ok &= write(dir, "lossy.webp", color, ".webp", {cv::IMWRITE_WEBP_QUALITY, 50});
    ok &= write(dir, "lossless.webp", gray, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101});
    ok &= write(dir, "color.bmp", color, ".bmp");
    ok &= write(dir, "gray.bmp", gray, ".bmp");

    // Regression: a second frame header (SOF0, 4x4) before the end-of-image marker. The decoder uses
    // the first one (40x24); probe_image once reported the last, so a large image could pass
    // limits.max_pixels disguised as a small one and be decoded at full size.
    std::vector<unsigned char> jpeg;
    cv::imencode(".jpg", color, jpeg);
    const unsigned char fake_frame[] = {0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x04, 0x00, 0x04, 0x01, 0x01, 0x11, 0x00};
    jpeg.insert(jpeg.end() - 2, std::begin(fake_frame), std::end(fake_frame));
    std::ofstream two(dir + "/two_frames.jpg", std::ios::binary);
    two.write(reinterpret_cast<const char*>(jpeg.data()), static_cast<std::streamsize>(jpeg.size()));
    ok &= static_cast<bool>(two);

    // Regression: a WebP header libwebp refuses, with "DICM" at byte 128. cv::imdecode passed it on to
    // its DICOM decoder, where GDCM failed an assertion and aborted the process (found by this fuzzer).
    static const unsigned char dicom_fallthrough[] = {
        0x52, 0x49, 0x46, 0x46, 0x98, 0x01, 0x00, 0x00, 0x57, 0x45, 0x42, 0x50,
        0x56, 0x50, 0x38, 0x4c, 0x8b, 0x02, 0x00, 0x01, 0x00, 0x00, 0x2f, 0x27,
        0xc0, 0x05, 0x00, 0xcd, 0x94, 0x21, 0xa2, 0xff, 0x01, 0x89, 0x50, 0x4e,
        0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0xfe, 0xff, 0x27, 0x00, 0x00, 0x00, 0x06, 0x01, 0x09, 0x01,
        0x00, 0x00, 0xff, 0x00, 0x4f, 0x4f, 0x00, 0x97, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x15, 0x13, 0x12, 0x12, 0x13, 0x27, 0x1c,
        0x1e, 0x17, 0x20, 0x2e, 0xe0, 0x31, 0x31, 0x2e, 0x29, 0x2d, 0x2c, 0x33,
        0x3a, 0x4a, 0x3e, 0x33, 0x36, 0x46, 0x2d, 0x2c, 0x2d, 0x40, 0x57, 0x41,
        0x46, 0x4c, 0x4e, 0x52, 0x44, 0x49, 0x43, 0x4d, 0xfb, 0xbd, 0xe2, 0x0f,
        0x1c, 0x01, 0x89, 0xff, 0xd8, 0xff, 0xe0, 0x00, 0x44, 0x49, 0x43, 0x4d,
        0x10, 0x4a, 0x46, 0x00, 0x44, 0x54, 0x01};
    std::ofstream dicom(dir + "/dicom_fallthrough.webp", std::ios::binary);
    dicom.write(reinterpret_cast<const char*>(dicom_fallthrough), sizeof dicom_fallthrough);
    ok &= static_cast<bool>(dicom);
    return ok ? 0 : 1;
}
