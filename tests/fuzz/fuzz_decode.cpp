// libFuzzer target: image probing and decoding (core/src/decode.cpp) on arbitrary bytes.
// Besides memory errors (ASan), it checks the decode contract:
//  - failures are sightline::Error only (anything else escapes and is reported as a crash);
//  - a decoded image is CV_8UC1, non-empty, and never has more pixels than the header declared or
//    than max_pixels allows (otherwise the pixel limit, our decompression-bomb guard, was bypassed);
//  - probe_image and decode_gray agree on the header.
#include <sightline/error.hpp>

#include "sightline/host/decode.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>

namespace {

[[noreturn]] void violated(const char* what, long long a, long long b) {
    std::fprintf(stderr, "fuzz_decode: contract violated: %s (%lld vs %lld)\n", what, a, b);
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> bytes(data, size);
    const sightline::host::DecodeLimits limits{1'000'000, 4'000'000};

    std::optional<sightline::host::ImageHeader> probed;
    try {
        probed = sightline::host::probe_image(bytes);
    } catch (const sightline::Error&) {
    }

    for (int min_long_side : {64, 800}) {
        try {
            auto d = sightline::host::decode_gray(bytes, limits, min_long_side);
            if (!probed) violated("decode_gray succeeded where probe_image failed", 0, 0);
            if (d.header.width != probed->width || d.header.height != probed->height)
                violated("decode_gray and probe_image disagree on the size", d.header.width, probed->width);
            if (d.gray.empty() || d.gray.type() != CV_8UC1) violated("decoded image is not CV_8UC1", d.gray.type(), CV_8UC1);
            const auto declared = static_cast<long long>(d.header.width) * d.header.height;
            const auto decoded = static_cast<long long>(d.gray.total());
            if (declared > static_cast<long long>(limits.max_pixels))
                violated("an image over max_pixels was decoded", declared, static_cast<long long>(limits.max_pixels));
            if (decoded > declared) violated("more pixels decoded than the header declared", decoded, declared);
            if (!(d.scale > 0.0 && d.scale <= 1.0)) violated("scale out of (0, 1]", static_cast<long long>(d.scale * 1000), 1000);
        } catch (const sightline::Error&) {
            // Refused with a message: the expected outcome for most inputs.
        }
    }
    return 0;
}
