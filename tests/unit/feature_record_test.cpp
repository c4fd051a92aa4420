// Feature records: a round trip is exact, and any damage is ErrorCode::data_loss — never a crash,
// never a wrong record.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sightline/serialize.hpp>

#include <cstring>
#include <random>
#include <sstream>

#include "sightline/host/feature_record.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

FeatureRecord sample_record(int n = 40) {
    FeatureRecord r;
    r.signature = "orb:v1;max_features=1000;working_size=800";
    r.item_id = "poster-42";
    r.image_size = cv::Size(800, 400);
    std::mt19937 rng(99);
    std::uniform_real_distribution<float> u(0.f, 800.f);
    for (int i = 0; i < n; ++i)
        r.features.keypoints.emplace_back(cv::Point2f(u(rng), u(rng) / 2), 31.f, u(rng) * 0.45f, u(rng) / 1000.f,
                                          i % 8, i);
    r.features.descriptors.create(n, 32, CV_8U);
    if (n > 0) cv::randu(r.features.descriptors, 0, 256);
    return r;
}

void expect_same(const FeatureRecord& a, const FeatureRecord& b) {
    EXPECT_EQ(a.signature, b.signature);
    EXPECT_EQ(a.item_id, b.item_id);
    EXPECT_EQ(a.image_size, b.image_size);
    ASSERT_EQ(a.features.keypoints.size(), b.features.keypoints.size());
    for (std::size_t i = 0; i < a.features.keypoints.size(); ++i) {
        const auto &x = a.features.keypoints[i], &y = b.features.keypoints[i];
        EXPECT_EQ(x.pt, y.pt);
        EXPECT_EQ(x.size, y.size);
        EXPECT_EQ(x.angle, y.angle);
        EXPECT_EQ(x.response, y.response);
        EXPECT_EQ(x.octave, y.octave);
        EXPECT_EQ(x.class_id, y.class_id);
    }
    ASSERT_EQ(a.features.descriptors.size(), b.features.descriptors.size());
    ASSERT_EQ(a.features.descriptors.type(), b.features.descriptors.type());
    if (!a.features.descriptors.empty()) {
        EXPECT_EQ(cv::norm(a.features.descriptors, b.features.descriptors, cv::NORM_INF), 0.0);
    }
}

// Decoding must throw Error(data_loss) and nothing else.
void expect_data_loss(const Bytes& b, const std::string& what) {
    try {
        FeatureRecord r = decode_record(b, "features/x/poster-42.rec");
        ADD_FAILURE() << what << ": a damaged record decoded without error (item '" << r.item_id << "', "
                      << r.features.keypoints.size() << " keypoints)";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::data_loss) << what << ": " << e.what();
        EXPECT_THAT(e.what(), HasSubstr("features/x/poster-42.rec")) << what;
    } catch (const std::exception& e) {
        ADD_FAILURE() << what << ": threw a non-sightline exception: " << e.what();
    }
}

TEST(FeatureRecord, RoundTrip) {
    FeatureRecord r = sample_record();
    Bytes b = encode_record(r);
    ASSERT_GT(b.size(), 24u);
    EXPECT_EQ(std::memcmp(b.data(), "SLFR", 4), 0);
    expect_same(decode_record(b, "x"), r);
    // Deterministic: the same record encodes to the same bytes.
    EXPECT_EQ(encode_record(r), b);
}

TEST(FeatureRecord, RoundTripOfEmptyFeaturesAndFloatDescriptors) {
    FeatureRecord empty = sample_record(0);
    empty.features.descriptors = cv::Mat();
    expect_same(decode_record(encode_record(empty), "x"), empty);

    FeatureRecord real = sample_record(10);
    real.features.descriptors.create(10, 64, CV_32F);
    cv::randn(real.features.descriptors, 0, 1);
    expect_same(decode_record(encode_record(real), "x"), real);
}

TEST(FeatureRecord, EverySingleByteCorruptionIsDataLoss) {
    const Bytes good = encode_record(sample_record());
    for (std::size_t i = 0; i < good.size(); ++i) {
        for (std::uint8_t mask : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xFF}}) {
            Bytes b = good;
            b[i] ^= mask;
            expect_data_loss(b, "byte " + std::to_string(i) + " ^ " + std::to_string(mask));
            if (HasFailure()) return;  // one report is enough
        }
    }
}

TEST(FeatureRecord, EveryTruncationIsDataLoss) {
    const Bytes good = encode_record(sample_record());
    for (std::size_t n = 0; n < good.size(); ++n) {
        expect_data_loss(Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)),
                         "truncated to " + std::to_string(n));
        if (HasFailure()) return;
    }
    Bytes longer = good;
    longer.push_back(0);
    expect_data_loss(longer, "one byte appended");
}

TEST(FeatureRecord, DefectsAreNamed) {
    const Bytes good = encode_record(sample_record());
    Bytes b = good;
    b[0] = 'X';
    EXPECT_THAT(capture_error([&] { decode_record(b, "r"); }).what(), HasSubstr("bad magic"));
    b = good;
    b[4] = 9;
    EXPECT_THAT(capture_error([&] { decode_record(b, "r"); }).what(), HasSubstr("version"));
    b = good;
    b[b.size() - 1] ^= 1;
    EXPECT_THAT(capture_error([&] { decode_record(b, "r"); }).what(), HasSubstr("checksum"));
    b.resize(10);
    EXPECT_THAT(capture_error([&] { decode_record(b, "r"); }).what(), HasSubstr("too short"));
}

// A record whose checksum matches but whose payload lies (a bug in a writer, or a record made by
// hand): counts and matrix headers are checked against the data, so it is data_loss, not a crash
// or a multi-gigabyte allocation.
Bytes with_payload(const std::string& payload) {
    Bytes b;
    auto put = [&](const void* p, std::size_t n) {
        const auto* c = static_cast<const std::uint8_t*>(p);
        b.insert(b.end(), c, c + n);
    };
    const std::uint32_t version = kFeatureRecordVersion;
    const std::uint64_t size = payload.size(), sum = fnv1a64(payload.data(), payload.size());
    put("SLFR", 4);
    put(&version, 4);
    put(&size, 8);
    put(&sum, 8);
    put(payload.data(), payload.size());
    return b;
}

std::string payload_with_matrix(std::int32_t keypoints, std::int32_t rows, std::int32_t cols, std::int32_t type) {
    std::ostringstream out;
    BinaryWriter w(out);
    w.string("sig");
    w.string("id");
    w.pod<std::int32_t>(100);
    w.pod<std::int32_t>(100);
    w.pod<std::uint32_t>(static_cast<std::uint32_t>(keypoints));
    for (int i = 0; i < keypoints; ++i) {
        for (int k = 0; k < 5; ++k) w.pod<float>(1.f);
        w.pod<std::int32_t>(0);
        w.pod<std::int32_t>(0);
    }
    w.pod<std::int32_t>(rows);
    w.pod<std::int32_t>(cols);
    w.pod<std::int32_t>(type);
    return out.str();  // no matrix data at all
}

TEST(FeatureRecord, ConsistentChecksumButLyingCountsIsDataLoss) {
    struct Case {
        const char* what;
        std::string payload;
    };
    const std::vector<Case> cases{
        {"keypoint count far beyond the data", [] {
             std::ostringstream out;
             BinaryWriter w(out);
             w.string("sig");
             w.string("id");
             w.pod<std::int32_t>(100);
             w.pod<std::int32_t>(100);
             w.pod<std::uint32_t>(4'000'000u);
             return out.str();
         }()},
        {"descriptor rows do not match keypoints", payload_with_matrix(2, 3, 32, CV_8U)},
        {"negative matrix size", payload_with_matrix(0, -1, 32, CV_8U)},
        {"unsupported matrix type", payload_with_matrix(1, 1, 32, CV_16S)},
        {"string length beyond the data", std::string("\xff\xff\x00\x00", 4)},
        {"image size zero", [] {
             std::ostringstream out;
             BinaryWriter w(out);
             w.string("sig");
             w.string("id");
             w.pod<std::int32_t>(0);
             w.pod<std::int32_t>(0);
             w.features({});
             return out.str();
         }()},
        // 2^24 x 2^16 bytes = 1 TiB claimed by a 60-byte record.
        {"huge matrix header with no data", payload_with_matrix(0, 1 << 24, 1 << 16, CV_8U)},
        {"large matrix header with no data", payload_with_matrix(0, 1 << 20, 1 << 12, CV_8U)},
    };
    for (const auto& c : cases) expect_data_loss(with_payload(c.payload), c.what);
}

}  // namespace
