#include "sightline/host/decode.hpp"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sightline/error.hpp>

#include <cstring>

namespace sightline::host {

namespace {

std::uint32_t be16(const std::uint8_t* p) { return (std::uint32_t{p[0]} << 8) | p[1]; }
std::uint32_t be32(const std::uint8_t* p) { return (be16(p) << 16) | be16(p + 2); }
std::uint32_t le16(const std::uint8_t* p) { return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8); }
std::uint32_t le24(const std::uint8_t* p) { return le16(p) | (std::uint32_t{p[2]} << 16); }
std::uint32_t le32(const std::uint8_t* p) { return le16(p) | (le16(p + 2) << 16); }

[[noreturn]] void bad(const std::string& msg) { throw Error(ErrorCode::invalid_argument, msg); }

// Walks the JPEG marker structure: the frame header gives the size, and the walk must reach the
// end-of-image marker, which is how a truncated upload is told from a complete one.
ImageHeader probe_jpeg(std::span<const std::uint8_t> b) {
    ImageHeader h{"jpeg", 0, 0};
    std::size_t i = 2;
    bool in_scan = false;
    bool have_frame = false;
    while (true) {
        if (in_scan) {
            // Entropy-coded data: 0xFF is followed by 0x00 (stuffing) or a restart marker, unless a
            // real marker begins.
            while (i + 1 < b.size() && !(b[i] == 0xFF && b[i + 1] != 0x00 && !(b[i + 1] >= 0xD0 && b[i + 1] <= 0xD7)))
                ++i;
            in_scan = false;
        }
        if (i + 1 >= b.size()) bad("the JPEG data is truncated (no end-of-image marker)");
        if (b[i] != 0xFF) bad("the JPEG data is corrupt (expected a marker at byte " + std::to_string(i) + ")");
        std::uint8_t marker = b[i + 1];
        if (marker == 0xFF) { ++i; continue; }  // fill byte
        i += 2;
        if (marker == 0xD9) break;  // end of image
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;
        if (i + 2 > b.size()) bad("the JPEG data is truncated inside a header");
        std::size_t len = be16(&b[i]);
        if (len < 2 || i + len > b.size()) bad("the JPEG data is truncated inside a header");
        bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
        if (sof) {
            if (len < 7) bad("the JPEG frame header is corrupt");
            // The decoder uses the first frame header; a later one must not be what the limits see.
            if (have_frame) bad("the JPEG data is corrupt (more than one frame header)");
            have_frame = true;
            h.height = static_cast<int>(be16(&b[i + 3]));
            h.width = static_cast<int>(be16(&b[i + 5]));
        }
        i += len;
        if (marker == 0xDA) {
            if (h.width == 0) bad("the JPEG data is corrupt (scan before frame header)");
            in_scan = true;
        }
    }
    if (h.width <= 0 || h.height <= 0) bad("the JPEG has no valid frame size");
    return h;
}

}  // namespace

ImageHeader probe_image(std::span<const std::uint8_t> b) {
    if (b.empty()) bad("the image is empty (0 bytes)");
    static const std::uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (b.size() >= 2 && b[0] == 0xFF && b[1] == 0xD8) return probe_jpeg(b);
    if (b.size() >= 8 && std::memcmp(b.data(), png_sig, 8) == 0) {
        if (b.size() < 24 || std::memcmp(&b[12], "IHDR", 4) != 0) bad("the PNG data is truncated or corrupt (no IHDR)");
        return {"png", static_cast<int>(be32(&b[16])), static_cast<int>(be32(&b[20]))};
    }
    if (b.size() >= 12 && std::memcmp(b.data(), "RIFF", 4) == 0 && std::memcmp(&b[8], "WEBP", 4) == 0) {
        if (b.size() < 30) bad("the WebP data is truncated");
        if (std::memcmp(&b[12], "VP8 ", 4) == 0)
            return {"webp", static_cast<int>(le16(&b[26]) & 0x3FFF), static_cast<int>(le16(&b[28]) & 0x3FFF)};
        if (std::memcmp(&b[12], "VP8L", 4) == 0) {
            std::uint32_t bits = le32(&b[21]);
            return {"webp", static_cast<int>((bits & 0x3FFF) + 1), static_cast<int>(((bits >> 14) & 0x3FFF) + 1)};
        }
        if (std::memcmp(&b[12], "VP8X", 4) == 0)
            return {"webp", static_cast<int>(le24(&b[24]) + 1), static_cast<int>(le24(&b[27]) + 1)};
        bad("the WebP data is corrupt (unknown chunk)");
    }
    if (b.size() >= 26 && b[0] == 'B' && b[1] == 'M') {
        auto w = static_cast<std::int32_t>(le32(&b[18])), hgt = static_cast<std::int32_t>(le32(&b[22]));
        if (w <= 0 || hgt == 0) bad("the BMP header is corrupt");
        return {"bmp", w, hgt < 0 ? -hgt : hgt};
    }
    bad("the data is not a supported image (JPEG, PNG, WebP or BMP)");
}

DecodedImage decode_gray(std::span<const std::uint8_t> bytes, const DecodeLimits& limits, int min_long_side) {
    if (bytes.size() > limits.max_bytes)
        throw Error(ErrorCode::resource_exhausted, "the image is " + std::to_string(bytes.size()) +
                                                       " bytes, over the limit of " +
                                                       std::to_string(limits.max_bytes) + " (limits.max_body_bytes)");
    DecodedImage out;
    out.header = probe_image(bytes);
    const auto& h = out.header;
    if (h.width <= 0 || h.height <= 0) bad("the " + h.format + " header declares an empty image");
    std::uint64_t pixels = std::uint64_t(h.width) * std::uint64_t(h.height);
    if (pixels > limits.max_pixels)
        throw Error(ErrorCode::resource_exhausted,
                    "the image is " + std::to_string(h.width) + "x" + std::to_string(h.height) + " = " +
                        std::to_string(pixels) + " pixels, over the limit of " + std::to_string(limits.max_pixels) +
                        " (limits.max_pixels); it was not decoded");

    int flags = cv::IMREAD_GRAYSCALE;
    if (h.format == "jpeg") {
        const int long_side = std::max(h.width, h.height);
        const std::pair<int, int> reduced[] = {
            {8, cv::IMREAD_REDUCED_GRAYSCALE_8}, {4, cv::IMREAD_REDUCED_GRAYSCALE_4}, {2, cv::IMREAD_REDUCED_GRAYSCALE_2}};
        for (auto [f, flag] : reduced)
            if (long_side / f >= min_long_side) {
                flags = flag;
                break;
            }
    }
    // cv::imdecode uses the first decoder whose signature matches. For what probe_image accepts that is
    // OpenCV's decoder of the same format, except when libwebp refuses a WebP header: then imdecode
    // falls through to the DICOM decoder ("DICM" at byte 128), whose GDCM aborts the process on some
    // inputs, and to GDAL ("DTED" at byte 140), which parses the data from a temp file. Data with
    // those signatures is refused before it can reach them (a real image has them by chance with a
    // probability of 2^-31).
    auto signature_at = [&](std::size_t offset, const char* sig) {
        return bytes.size() >= offset + 4 && std::memcmp(&bytes[offset], sig, 4) == 0;
    };
    if (signature_at(128, "DICM") || signature_at(140, "DTED"))
        bad("the " + h.format + " data is corrupt (it carries the signature of another format)");
    cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U, const_cast<std::uint8_t*>(bytes.data()));
    try {
        out.gray = cv::imdecode(raw, flags);
    } catch (const cv::Exception& e) {
        bad("the " + h.format + " data could not be decoded: " + e.err);
    }
    if (out.gray.empty()) bad("the " + h.format + " data is corrupt or truncated and could not be decoded");
    // EXIF orientation may have swapped the axes relative to the header.
    const bool swapped = (out.gray.cols > out.gray.rows) != (h.width > h.height) && h.width != h.height;
    out.original = swapped ? cv::Size(h.height, h.width) : cv::Size(h.width, h.height);
    out.scale = static_cast<double>(out.gray.cols) / out.original.width;
    return out;
}

double resize_to_working(const cv::Mat& in, cv::Mat& out, int working_size, double max_upscale) {
    const int long_side = std::max(in.cols, in.rows);
    if (working_size <= 0 || long_side == 0 || (long_side <= working_size && max_upscale <= 1.0)) {
        out = in;
        return 1.0;
    }
    const double s = std::min(static_cast<double>(working_size) / long_side, std::max(1.0, max_upscale));
    if (s == 1.0) {
        out = in;
        return 1.0;
    }
    cv::resize(in, out, cv::Size(), s, s, s < 1.0 ? cv::INTER_AREA : cv::INTER_LINEAR);
    return static_cast<double>(out.cols) / in.cols;
}

}  // namespace sightline::host
