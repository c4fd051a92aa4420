#pragma once
// Little-endian binary helpers shared by the host's feature records and by index snapshots, so
// every persisted format reads the same way and fails the same way on truncated input.
#include <opencv2/core.hpp>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <istream>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "sightline/error.hpp"
#include "sightline/features.hpp"

namespace sightline {

class BinaryWriter {
public:
    explicit BinaryWriter(std::ostream& out) : out_(out) {}
    template <class T> void pod(const T& v) {
        static_assert(std::is_trivially_copyable_v<T>);
        out_.write(reinterpret_cast<const char*>(&v), sizeof v);
    }
    void bytes(const void* data, std::size_t n) { out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(n)); }
    void string(const std::string& s) {
        pod<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
        bytes(s.data(), s.size());
    }
    void features(const Features& f) {
        pod<std::uint32_t>(static_cast<std::uint32_t>(f.keypoints.size()));
        for (const auto& k : f.keypoints) {
            pod(k.pt.x); pod(k.pt.y); pod(k.size); pod(k.angle); pod(k.response);
            pod<std::int32_t>(k.octave); pod<std::int32_t>(k.class_id);
        }
        mat(f.descriptors);
    }
    void mat(const cv::Mat& m) {
        cv::Mat c = m.isContinuous() ? m : m.clone();
        pod<std::int32_t>(c.rows); pod<std::int32_t>(c.cols); pod<std::int32_t>(c.type());
        if (!c.empty()) bytes(c.data, c.total() * c.elemSize());
    }

private:
    std::ostream& out_;
};

class BinaryReader {
public:
    // what: names the thing being read in error messages ("feature record features/x.rec").
    BinaryReader(std::istream& in, std::string what) : in_(in), what_(std::move(what)) {}
    template <class T> T pod() {
        static_assert(std::is_trivially_copyable_v<T>);
        T v{};
        read(&v, sizeof v);
        return v;
    }
    void read(void* data, std::size_t n) {
        in_.read(static_cast<char*>(data), static_cast<std::streamsize>(n));
        if (static_cast<std::size_t>(in_.gcount()) != n) fail("truncated");
    }
    std::string string(std::size_t max = 1 << 20) {
        auto n = pod<std::uint32_t>();
        if (n > max) fail("string length " + std::to_string(n) + " is implausible");
        std::string s(n, '\0');
        read(s.data(), n);
        return s;
    }
    Features features(std::size_t max_keypoints = 1 << 22) {
        Features f;
        auto n = pod<std::uint32_t>();
        if (n > max_keypoints) fail("keypoint count " + std::to_string(n) + " is implausible");
        f.keypoints.resize(n);
        for (auto& k : f.keypoints) {
            k.pt.x = pod<float>(); k.pt.y = pod<float>(); k.size = pod<float>(); k.angle = pod<float>();
            k.response = pod<float>(); k.octave = pod<std::int32_t>(); k.class_id = pod<std::int32_t>();
        }
        f.descriptors = mat();
        if (!f.descriptors.empty() && f.descriptors.rows != static_cast<int>(n))
            fail("descriptor rows do not match keypoints");
        return f;
    }
    cv::Mat mat() {
        auto rows = pod<std::int32_t>(), cols = pod<std::int32_t>(), type = pod<std::int32_t>();
        if (rows < 0 || cols < 0 || rows > (1 << 24) || cols > (1 << 16) ||
            (type != CV_8U && type != CV_16F && type != CV_32F && type != CV_8UC1 && type != CV_64F))
            fail("matrix header is implausible");
        // Never trust a size before the bytes exist: read in chunks, so a lying header ends in
        // "truncated" instead of a huge allocation.
        const std::size_t elem = static_cast<std::size_t>(CV_ELEM_SIZE(type));
        const std::size_t total = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) * elem;
        if (total > (std::size_t{1} << 30)) fail("matrix of " + std::to_string(total) + " bytes is implausible");
        std::vector<std::uint8_t> data;
        constexpr std::size_t chunk = 1 << 20;
        while (data.size() < total) {
            std::size_t n = std::min(chunk, total - data.size());
            std::size_t at = data.size();
            data.resize(at + n);
            read(data.data() + at, n);
        }
        cv::Mat m(rows, cols, type);
        if (total) std::memcpy(m.data, data.data(), total);
        return m;
    }
    [[noreturn]] void fail(const std::string& why) const {
        throw Error(ErrorCode::data_loss, what_ + ": " + why);
    }

private:
    std::istream& in_;
    std::string what_;
};

// FNV-1a, 64 bit: a cheap checksum for records and a stable short name for signatures.
inline std::uint64_t fnv1a64(const void* data, std::size_t n, std::uint64_t h = 1469598103934665603ull) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

}  // namespace sightline
