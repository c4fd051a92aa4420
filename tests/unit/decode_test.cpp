// Image probing and decoding: sizes from headers, clear errors for bad input, limits enforced
// before any pixel is decoded, reduced-scale JPEG decoding and EXIF orientation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <chrono>
#include <random>

#include "sightline/host/decode.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

// A non-square test picture with structure, so orientation can be checked by content.
cv::Mat test_picture(int w, int h) {
    cv::Mat img(h, w, CV_8UC3, cv::Scalar(30, 30, 30));
    cv::rectangle(img, cv::Rect(0, 0, w / 3, h / 4), cv::Scalar(250, 250, 250), cv::FILLED);  // bright top-left
    cv::circle(img, cv::Point(w * 3 / 4, h * 2 / 3), std::min(w, h) / 6, cv::Scalar(0, 0, 200), cv::FILLED);
    cv::line(img, cv::Point(0, h - 1), cv::Point(w - 1, h / 2), cv::Scalar(0, 255, 0), 5);
    return img;
}

// Smooth random texture of mid-grey values (no pure white), cheap to make at any size.
cv::Mat textured(int w, int h) {
    cv::Mat small(h / 50, w / 50, CV_8UC3), big;
    cv::RNG rng(7);
    rng.fill(small, cv::RNG::UNIFORM, 40, 200);
    cv::resize(small, big, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
    return big;
}

Bytes encode(const std::string& ext, const cv::Mat& img, std::vector<int> params = {}) {
    std::vector<std::uint8_t> out;
    if (!cv::imencode(ext, img, out, params)) throw std::runtime_error("imencode " + ext + " failed");
    return Bytes(out.begin(), out.end());
}

void be32(Bytes& b, std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}

// PNG signature + a well-formed IHDR chunk claiming width x height, and nothing else.
Bytes png_header(std::uint32_t width, std::uint32_t height) {
    Bytes b = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    be32(b, 13);
    Bytes chunk = {'I', 'H', 'D', 'R'};
    be32(chunk, width);
    be32(chunk, height);
    for (std::uint8_t v : {8, 0, 0, 0, 0}) chunk.push_back(v);  // 8-bit gray, deflate, no interlace
    std::uint32_t crc = 0xFFFFFFFFu;  // CRC-32 of type + data
    for (std::uint8_t byte : chunk) {
        crc ^= byte;
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    b.insert(b.end(), chunk.begin(), chunk.end());
    be32(b, crc ^ 0xFFFFFFFFu);
    return b;
}

// A JPEG APP1 segment with a big-endian TIFF header and one IFD entry: Orientation = value.
Bytes exif_orientation_segment(std::uint16_t orientation) {
    Bytes tiff = {'M', 'M', 0x00, 0x2A, 0x00, 0x00, 0x00, 0x08,  // byte order, magic, IFD0 offset 8
                  0x00, 0x01,                                    // one entry
                  0x01, 0x12,                                    // tag 0x0112 Orientation
                  0x00, 0x03,                                    // type SHORT
                  0x00, 0x00, 0x00, 0x01,                        // count 1
                  static_cast<std::uint8_t>(orientation >> 8), static_cast<std::uint8_t>(orientation), 0x00, 0x00,
                  0x00, 0x00, 0x00, 0x00};                       // no next IFD
    Bytes payload = {'E', 'x', 'i', 'f', 0x00, 0x00};
    payload.insert(payload.end(), tiff.begin(), tiff.end());
    const std::size_t len = payload.size() + 2;
    Bytes seg = {0xFF, 0xE1, static_cast<std::uint8_t>(len >> 8), static_cast<std::uint8_t>(len)};
    seg.insert(seg.end(), payload.begin(), payload.end());
    return seg;
}

Bytes with_exif(const Bytes& jpeg, std::uint16_t orientation) {
    Bytes seg = exif_orientation_segment(orientation);
    Bytes out(jpeg.begin(), jpeg.begin() + 2);  // SOI
    out.insert(out.end(), seg.begin(), seg.end());
    out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
    return out;
}

TEST(Probe, ReadsSizesOfEverySupportedFormat) {
    const cv::Mat img = test_picture(123, 45);
    struct Case {
        const char* ext;
        const char* format;
        std::vector<int> params;
    };
    std::vector<Case> cases{{".jpg", "jpeg", {}},
                            {".png", "png", {}},
                            {".bmp", "bmp", {}},
                            {".webp", "webp", {cv::IMWRITE_WEBP_QUALITY, 80}},
                            {".webp", "webp", {cv::IMWRITE_WEBP_QUALITY, 101}}};  // > 100: lossless (VP8L)
    for (const auto& c : cases) {
        SCOPED_TRACE(std::string(c.ext) + " " + (c.params.empty() ? "" : std::to_string(c.params[1])));
        if (!cv::haveImageWriter(c.ext)) {
            ADD_FAILURE() << "OpenCV cannot write " << c.ext;
            continue;
        }
        Bytes b = encode(c.ext, img, c.params);
        ImageHeader h = probe_image(b);
        EXPECT_EQ(h.format, c.format);
        EXPECT_EQ(h.width, 123);
        EXPECT_EQ(h.height, 45);
        // ... and decoding agrees.
        DecodedImage d = decode_gray(b, {}, 800);
        EXPECT_EQ(d.gray.type(), CV_8UC1);
        EXPECT_EQ(d.gray.size(), cv::Size(123, 45));
        EXPECT_EQ(d.original, cv::Size(123, 45));
        EXPECT_DOUBLE_EQ(d.scale, 1.0);
    }
}

TEST(Probe, EmptyInput) {
    Error e = capture_error([] { probe_image({}); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("empty"));
    e = capture_error([] { decode_gray({}, {}, 800); });
    EXPECT_THAT(e.what(), HasSubstr("empty"));
}

TEST(Probe, TruncatedJpegSaysTruncated) {
    Bytes jpeg = encode(".jpg", test_picture(400, 300));
    for (std::size_t cut : {jpeg.size() / 2, jpeg.size() - 2, std::size_t{3}, std::size_t{20}}) {
        SCOPED_TRACE("cut at " + std::to_string(cut));
        Bytes half(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(cut));
        Error e = capture_error([&] { probe_image(half); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        EXPECT_THAT(e.what(), HasSubstr("truncated"));
        e = capture_error([&] { decode_gray(half, {}, 800); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        EXPECT_THAT(e.what(), HasSubstr("truncated"));
    }
}

TEST(Probe, TruncatedOtherFormatsAreErrors) {
    const cv::Mat img = test_picture(200, 100);
    for (const char* ext : {".png", ".bmp", ".webp"}) {
        SCOPED_TRACE(ext);
        Bytes b = encode(ext, img);
        for (std::size_t cut : {std::size_t{10}, b.size() / 2}) {
            Bytes part(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(cut));
            Error e = capture_error([&] { decode_gray(part, {}, 800); });
            EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << cut << ": " << e.what();
            EXPECT_FALSE(std::string(e.what()).empty());
        }
    }
}

TEST(Probe, RandomBytesAreNotAnImage) {
    std::mt19937 rng(1234);
    for (std::size_t n : {1u, 7u, 100u, 5000u}) {
        Bytes b(n);
        for (auto& x : b) x = static_cast<std::uint8_t>(rng());
        b[0] = 0x42;  // never a format's first byte except 'B', and b[1] is not 'M' below
        if (n > 1) b[1] = 0x00;
        Error e = capture_error([&] { probe_image(b); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        EXPECT_THAT(e.what(), HasSubstr("not a supported image")) << n;
        e = capture_error([&] { decode_gray(b, {}, 800); });
        EXPECT_THAT(e.what(), HasSubstr("not a supported image")) << n;
    }
    Bytes text = to_bytes("<html><body>not an image</body></html>");
    EXPECT_THAT(capture_error([&] { probe_image(text); }).what(), HasSubstr("not a supported image"));
}

TEST(Limits, HugePngHeaderIsRefusedBeforeDecoding) {
    Bytes b = png_header(20000, 20000);
    ASSERT_EQ(b.size(), 33u);
    ImageHeader h = probe_image(b);
    EXPECT_EQ(h.format, "png");
    EXPECT_EQ(h.width, 20000);
    EXPECT_EQ(h.height, 20000);

    const auto t0 = std::chrono::steady_clock::now();
    Error e = capture_error([&] { decode_gray(b, DecodeLimits{20'000'000, 50'000'000}, 800); });
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    // resource_exhausted, not a decode error: the header alone decided (a decode attempt of these
    // 33 bytes would have failed as corrupt instead).
    EXPECT_EQ(e.code(), ErrorCode::resource_exhausted) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("max_pixels"));
    EXPECT_THAT(e.what(), HasSubstr("20000x20000"));
    EXPECT_THAT(e.what(), HasSubstr("not decoded"));
    EXPECT_LT(std::chrono::duration<double>(elapsed).count(), 1.0);
}

TEST(Limits, PixelLimitIsInclusive) {
    Bytes ok = encode(".png", test_picture(100, 50));
    EXPECT_NO_THROW(decode_gray(ok, DecodeLimits{1'000'000, 5000}, 800));
    Error e = capture_error([&] { decode_gray(ok, DecodeLimits{1'000'000, 4999}, 800); });
    EXPECT_EQ(e.code(), ErrorCode::resource_exhausted);
}

TEST(Limits, MaxBytesIsEnforced) {
    Bytes jpeg = encode(".jpg", test_picture(300, 200));
    Error e = capture_error([&] { decode_gray(jpeg, DecodeLimits{jpeg.size() - 1, 50'000'000}, 800); });
    EXPECT_EQ(e.code(), ErrorCode::resource_exhausted);
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(jpeg.size())));
    EXPECT_THAT(e.what(), HasSubstr("max_body_bytes"));
    EXPECT_NO_THROW(decode_gray(jpeg, DecodeLimits{jpeg.size(), 50'000'000}, 800));
}

TEST(Decode, LargeJpegIsDecodedAtReducedScale) {
    cv::Mat big = textured(4000, 3000);
    cv::rectangle(big, cv::Rect(0, 0, 1000, 600), cv::Scalar(255, 255, 255), cv::FILLED);
    Bytes jpeg = encode(".jpg", big, {cv::IMWRITE_JPEG_QUALITY, 80});

    DecodedImage d = decode_gray(jpeg, {}, 800);
    EXPECT_EQ(d.original, cv::Size(4000, 3000));
    EXPECT_EQ(d.header.width, 4000);
    EXPECT_LE(d.gray.cols, 2000);
    EXPECT_GE(std::max(d.gray.cols, d.gray.rows), 800);
    EXPECT_EQ(d.gray.cols * 3, d.gray.rows * 4);
    EXPECT_DOUBLE_EQ(d.scale, static_cast<double>(d.gray.cols) / 4000.0);
    // Content is where it should be: the white block covers the top-left quarter-ish.
    EXPECT_GT(d.gray.at<std::uint8_t>(static_cast<int>(300 * d.scale), static_cast<int>(500 * d.scale)), 240);

    // A smaller min_long_side allows a stronger reduction; a larger one none.
    DecodedImage small = decode_gray(jpeg, {}, 400);
    EXPECT_EQ(small.gray.cols, 500);
    DecodedImage full = decode_gray(jpeg, {}, 3000);
    EXPECT_EQ(full.gray.cols, 4000);
}

TEST(Decode, ResizeToWorkingNeverEnlarges) {
    cv::Mat in(300, 1600, CV_8U, cv::Scalar(7)), out;
    EXPECT_DOUBLE_EQ(resize_to_working(in, out, 800), 0.5);
    EXPECT_EQ(out.size(), cv::Size(800, 150));
    cv::Mat small(100, 200, CV_8U), same;
    EXPECT_DOUBLE_EQ(resize_to_working(small, same, 800), 1.0);
    EXPECT_EQ(same.size(), small.size());
}

TEST(Decode, ResizeToWorkingEnlargesAtMostMaxUpscale) {
    cv::Mat small(100, 200, CV_8U, cv::Scalar(7)), out;
    EXPECT_DOUBLE_EQ(resize_to_working(small, out, 800, 1.5), 1.5);
    EXPECT_EQ(out.size(), cv::Size(300, 150));
    EXPECT_EQ(out.at<unsigned char>(75, 150), 7);
    // Never past working_size, and a large image is still only reduced.
    EXPECT_DOUBLE_EQ(resize_to_working(small, out, 250, 2.0), 1.25);
    EXPECT_EQ(out.size(), cv::Size(250, 125));
    cv::Mat large(300, 1600, CV_8U);
    EXPECT_DOUBLE_EQ(resize_to_working(large, out, 800, 2.0), 0.5);
    EXPECT_EQ(out.size(), cv::Size(800, 150));
}

class ExifOrientation : public ::testing::TestWithParam<int> {};

TEST_P(ExifOrientation, IsAppliedAndOriginalIsSwapped) {
    const int orientation = GetParam();
    const cv::Mat img = test_picture(320, 200);
    const Bytes plain = encode(".jpg", img, {cv::IMWRITE_JPEG_QUALITY, 95});
    const Bytes rotated = with_exif(plain, static_cast<std::uint16_t>(orientation));

    // The header reports the stored size.
    ImageHeader h = probe_image(rotated);
    EXPECT_EQ(h.width, 320);
    EXPECT_EQ(h.height, 200);

    DecodedImage d = decode_gray(rotated, {}, 800);  // small enough for no reduced-scale decoding
    cv::Mat expected_gray;
    cv::cvtColor(cv::imdecode(plain, cv::IMREAD_COLOR), expected_gray, cv::COLOR_BGR2GRAY);
    if (orientation == 6) cv::rotate(expected_gray, expected_gray, cv::ROTATE_90_CLOCKWISE);
    if (orientation == 8) cv::rotate(expected_gray, expected_gray, cv::ROTATE_90_COUNTERCLOCKWISE);
    if (orientation == 3) cv::rotate(expected_gray, expected_gray, cv::ROTATE_180);

    const bool swaps = orientation == 6 || orientation == 8;
    EXPECT_EQ(d.gray.size(), swaps ? cv::Size(200, 320) : cv::Size(320, 200));
    EXPECT_EQ(d.original, swaps ? cv::Size(200, 320) : cv::Size(320, 200));
    ASSERT_EQ(d.gray.size(), expected_gray.size());
    cv::Mat diff;
    cv::absdiff(d.gray, expected_gray, diff);
    EXPECT_LT(cv::mean(diff)[0], 4.0) << "pixels are not rotated as EXIF orientation " << orientation << " says";
}

INSTANTIATE_TEST_SUITE_P(Orientations, ExifOrientation, ::testing::Values(1, 3, 6, 8));

TEST(Decode, ExifOrientationWithReducedScale) {
    cv::Mat big = textured(2400, 1800);
    cv::rectangle(big, cv::Rect(0, 0, 600, 400), cv::Scalar(255, 255, 255), cv::FILLED);
    const Bytes jpeg = with_exif(encode(".jpg", big), 6);
    DecodedImage d = decode_gray(jpeg, {}, 800);
    EXPECT_EQ(d.original, cv::Size(1800, 2400));
    EXPECT_EQ(d.gray.size(), cv::Size(900, 1200));  // halved, then rotated
    EXPECT_DOUBLE_EQ(d.scale, 0.5);
    // The white block was top-left; after a 90° clockwise turn it is top-right.
    EXPECT_GT(d.gray.at<std::uint8_t>(50, d.gray.cols - 50), 240);
    EXPECT_LT(d.gray.at<std::uint8_t>(d.gray.rows - 50, 50), 250);
}

}  // namespace
