// The SDK's vocabulary tree: clustering, quantisation, embedding signatures, the file format.
#include <gtest/gtest.h>

#include <sightline/features.hpp>
#include <sightline/vocabulary.hpp>

#include <cmath>
#include <map>
#include <set>

namespace {

using sightline::descriptor_mismatch;
using sightline::Vocabulary;

// `clusters` well separated centres; each image holds noisy copies of a few of them.
std::vector<cv::Mat> clustered(int type, int clusters, int per_image, int images, cv::Mat& centres,
                               std::uint64_t seed = 7) {
    cv::RNG rng(seed);
    const int cols = type == CV_8U ? 32 : 64;
    centres.create(clusters, cols, type);
    if (type == CV_8U) {
        rng.fill(centres, cv::RNG::UNIFORM, 0, 256);
    } else {
        rng.fill(centres, cv::RNG::NORMAL, 0, 1);
        for (int r = 0; r < clusters; ++r) cv::normalize(centres.row(r), centres.row(r));
    }
    std::vector<cv::Mat> out;
    for (int i = 0; i < images; ++i) {
        cv::Mat m(per_image, cols, type);
        for (int r = 0; r < per_image; ++r) {
            centres.row(rng.uniform(0, clusters)).copyTo(m.row(r));
            if (type == CV_8U) {
                for (int f = 0; f < 6; ++f) {  // 6 of 256 bits flipped
                    int bit = rng.uniform(0, 256);
                    m.at<std::uint8_t>(r, bit / 8) ^= static_cast<std::uint8_t>(1u << (bit % 8));
                }
            } else {
                cv::Mat noise(1, cols, CV_32F);
                rng.fill(noise, cv::RNG::NORMAL, 0, 0.02);
                m.row(r) += noise;
            }
        }
        out.push_back(m);
    }
    return out;
}

Vocabulary::TrainParams small() {
    Vocabulary::TrainParams p;
    p.branching = 4;
    p.depth = 3;
    p.iterations = 10;
    return p;
}

// One level of 16 words under the root: each of clustered()'s 16 centres can have a word.
Vocabulary::TrainParams one_level() {
    auto p = small();
    p.branching = 16;
    p.depth = 1;
    return p;
}

class VocabularyTypes : public ::testing::TestWithParam<int> {};

TEST_P(VocabularyTypes, NoisyCopiesOfOneCentreLandInOneWord) {
    cv::Mat centres;
    auto images = clustered(GetParam(), 16, 200, 10, centres);
    // One level of 16: each centre's copies should form one cluster. (Deeper, the tree would go on
    // splitting one centre's copies by their noise.)
    auto v = Vocabulary::train(images, one_level(), "test:v1");
    EXPECT_LE(v.words(), 16u);
    // Two levels of 4: still at most 16 words, most centres apart.
    auto two = small();
    two.depth = 2;
    auto t = Vocabulary::train(images, two, "test:v1");
    EXPECT_LE(t.words(), 16u);
    EXPECT_GE(t.words(), 10u);
    auto tw = t.quantize(centres);
    EXPECT_GE(std::set<std::uint32_t>(tw.begin(), tw.end()).size(), 10u);
    EXPECT_EQ(v.descriptor_type(), GetParam());
    // Every noisy copy of centre c must share the word of the centre itself, and distinct
    // centres should mostly get distinct words.
    auto centre_words = v.quantize(centres);
    std::set<std::uint32_t> distinct(centre_words.begin(), centre_words.end());
    EXPECT_GE(distinct.size(), 12u);
    cv::Mat dummy;
    auto probe = clustered(GetParam(), 16, 400, 1, dummy, 7);  // same centres (same seed), new noise
    ASSERT_EQ(cv::norm(dummy, centres, cv::NORM_INF), 0);
    int agree = 0, total = 0;
    for (int r = 0; r < probe[0].rows; ++r) {
        // Which centre is it a copy of? The nearest.
        int best = 0;
        double bd = 1e18;
        for (int c = 0; c < centres.rows; ++c) {
            double d = cv::norm(probe[0].row(r), centres.row(c), GetParam() == CV_8U ? cv::NORM_HAMMING : cv::NORM_L2);
            if (d < bd) {
                bd = d;
                best = c;
            }
        }
        agree += v.quantize_row(probe[0].ptr(r)) == centre_words[static_cast<std::size_t>(best)];
        ++total;
    }
    EXPECT_GE(agree, total * 95 / 100) << agree << " of " << total;
}

// Multiple assignment with a distance ratio: the neighbours kept are the nearest of those without
// one, fewer as the ratio tightens, none below 1 (the own word is the nearest). A copy close to its
// centre keeps none at 1.2; a row half of one centre and half of another keeps its neighbour.
TEST_P(VocabularyTypes, NeighbourWordsOnlyWithinTheDistanceRatio) {
    cv::Mat centres;
    auto images = clustered(GetParam(), 16, 200, 10, centres);
    const auto v = Vocabulary::train(images, one_level(), "test:v1");
    cv::Mat rows = images[0].rowRange(0, 100).clone();
    cv::Mat mixed(centres.rows - 1, centres.cols, centres.type());
    const int half = centres.cols / 2;
    for (int r = 0; r + 1 < centres.rows; ++r) {
        centres.row(r).colRange(0, half).copyTo(mixed.row(r).colRange(0, half));
        centres.row(r + 1)
            .colRange(half, centres.cols)
            .copyTo(mixed.row(r).colRange(half, centres.cols));
    }
    const auto near = [&](const cv::Mat& m, int r, double ratio) {
        std::vector<std::uint32_t> out;
        v.quantize_near(m.ptr(r), 3, out, ratio);
        return out;
    };
    int copies_alone = 0, mixed_kept = 0;
    for (const cv::Mat* m : {&rows, &mixed})
        for (int r = 0; r < m->rows; ++r) {
            const auto all = near(*m, r, 0);
            ASSERT_EQ(all.size(), 3u);
            EXPECT_EQ(all.front(), v.quantize_row(m->ptr(r)));
            EXPECT_EQ(near(*m, r, 1e6), all);
            EXPECT_EQ(near(*m, r, 0.99).size(), 1u);
            const auto loose = near(*m, r, 1.5), tight = near(*m, r, 1.2);
            EXPECT_LE(tight.size(), loose.size());
            EXPECT_TRUE(std::equal(loose.begin(), loose.end(), all.begin()))
                << "not the nearest neighbours";
            EXPECT_TRUE(std::equal(tight.begin(), tight.end(), all.begin()))
                << "not the nearest neighbours";
            if (m == &rows)
                copies_alone += tight.size() == 1;
            else
                mixed_kept += tight.size() > 1;
        }
    EXPECT_GE(copies_alone, 90) << "of 100 noisy copies";
    EXPECT_GE(mixed_kept, 8) << "of 15 rows between two centres";
}

TEST_P(VocabularyTypes, SameSeedSameBytesAndRoundTrip) {
    cv::Mat centres;
    auto images = clustered(GetParam(), 16, 100, 8, centres);
    auto a = Vocabulary::train(images, small(), "test:v1");
    auto b = Vocabulary::train(images, small(), "test:v1");
    EXPECT_EQ(a.serialize(), b.serialize());
    auto bytes = a.serialize();
    auto c = Vocabulary::parse(bytes, "test.voc");
    EXPECT_EQ(c.words(), a.words());
    EXPECT_EQ(c.signature(), "test:v1");
    for (const auto& m : images) {
        EXPECT_EQ(c.quantize(m), a.quantize(m));
        for (int r = 0; r < m.rows; ++r) {
            auto w = a.quantize_row(m.ptr(r));
            EXPECT_EQ(c.embed(m.ptr(r), w), a.embed(m.ptr(r), w));
        }
    }
    for (std::uint32_t w = 0; w < a.words(); ++w) EXPECT_FLOAT_EQ(c.idf(w), a.idf(w));
}

TEST_P(VocabularyTypes, CloseDescriptorsShareMostSignatureBits) {
    cv::Mat centres;
    auto images = clustered(GetParam(), 16, 200, 10, centres);
    auto v = Vocabulary::train(images, small(), "test:v1");
    // Pairs of copies of one centre vs. pairs of unrelated descriptors in the same word.
    cv::RNG rng(3);
    double near = 0, far = 0;
    int n = 0;
    for (int r = 0; r + 1 < images[0].rows; r += 2) {
        const auto* x = images[0].ptr(r);
        cv::Mat y = images[0].row(r).clone();
        if (GetParam() == CV_8U) {
            y.data[rng.uniform(0, 32)] ^= 1;
        } else {
            y.at<float>(0, rng.uniform(0, 64)) += 0.01f;
        }
        cv::Mat z(1, images[0].cols, GetParam());
        if (GetParam() == CV_8U) rng.fill(z, cv::RNG::UNIFORM, 0, 256);
        else rng.fill(z, cv::RNG::NORMAL, 0, 0.2);
        auto w = v.quantize_row(x);
        near += __builtin_popcountll(v.embed(x, w) ^ v.embed(y.data, w));
        far += __builtin_popcountll(v.embed(x, w) ^ v.embed(z.data, w));
        ++n;
    }
    EXPECT_LT(near / n, 3.0);  // of 64 bits
    EXPECT_GT(far / n, 20.0);
}

INSTANTIATE_TEST_SUITE_P(BinaryAndFloat, VocabularyTypes, ::testing::Values(CV_8U, CV_32F),
                         [](const auto& info) { return info.param == CV_8U ? "binary" : "float"; });

TEST(Vocabulary, FloatSignatureBitsSplitEachWordInHalf) {
    // Copies of two centres offset along one axis by a skewed (exponential) amount: a projection's
    // offset from the word mean is more often negative than positive (P(s > mean) = 1/e), so a zero
    // threshold would set most bits for about 37% or 63% of a word's descriptors; the learned
    // per-word median sets each for half.
    cv::RNG rng(11);
    cv::Mat centres(2, 64, CV_32F);
    rng.fill(centres, cv::RNG::NORMAL, 0, 1);
    for (int r = 0; r < 2; ++r) cv::normalize(centres.row(r), centres.row(r));
    std::vector<cv::Mat> images;
    for (int i = 0; i < 4; ++i) {
        cv::Mat m(100, 64, CV_32F);
        for (int r = 0; r < m.rows; ++r) {
            centres.row(r % 2).copyTo(m.row(r));
            cv::Mat noise(1, 64, CV_32F);
            rng.fill(noise, cv::RNG::NORMAL, 0, 0.001);
            m.row(r) += noise;
            m.at<float>(r, 0) += static_cast<float>(-0.05 * std::log(1.0 - rng.uniform(0.0, 1.0)));
        }
        images.push_back(m);
    }
    auto p = small();
    p.branching = 2;
    p.depth = 1;
    auto v = Vocabulary::train(images, p, "test:v1");
    ASSERT_EQ(v.words(), 2u);
    std::map<std::uint32_t, std::vector<int>> ones;  // word -> per bit, descriptors with it set
    std::map<std::uint32_t, int> count;
    for (const auto& m : images)
        for (int r = 0; r < m.rows; ++r) {
            const auto w = v.quantize_row(m.ptr(r));
            const auto s = v.embed(m.ptr(r), w);
            auto& o = ones[w];
            o.resize(Vocabulary::kSignatureBits);
            for (int b = 0; b < Vocabulary::kSignatureBits; ++b)
                o[static_cast<std::size_t>(b)] += (s >> b) & 1;
            ++count[w];
        }
    ASSERT_EQ(count.size(), 2u);
    for (const auto& [w, o] : ones)
        for (int b = 0; b < Vocabulary::kSignatureBits; ++b) {
            const double share = static_cast<double>(o[static_cast<std::size_t>(b)]) / count[w];
            EXPECT_NEAR(share, 0.5, 0.05) << "word " << w << ", bit " << b;
        }
}

TEST(Vocabulary, Format1FloatVocabulariesAskForRetrainingBinaryOnesStillLoad) {
    cv::Mat centres;
    auto as_format_1 = [](std::vector<std::uint8_t> b) {
        b[4] = 1;  // the version is outside the checksummed payload
        return b;
    };
    auto binary = Vocabulary::train(clustered(CV_8U, 8, 50, 4, centres), small(), "test:v1");
    EXPECT_EQ(Vocabulary::parse(as_format_1(binary.serialize()), "b.voc").words(), binary.words());
    auto floats = Vocabulary::train(clustered(CV_32F, 8, 50, 4, centres), small(), "test:v1");
    try {
        Vocabulary::parse(as_format_1(floats.serialize()), "vocab/f.voc");
        ADD_FAILURE() << "a format 1 float vocabulary was accepted";
    } catch (const sightline::Error& e) {
        EXPECT_NE(std::string(e.what()).find("vocab/f.voc"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("retrain"), std::string::npos) << e.what();
    }
}

TEST(Vocabulary, DamagedFilesAreRefusedWithTheReason) {
    cv::Mat centres;
    auto v = Vocabulary::train(clustered(CV_8U, 8, 50, 4, centres), small(), "test:v1");
    auto bytes = v.serialize();
    auto expect_loss = [](std::vector<std::uint8_t> b, const std::string& why) {
        try {
            Vocabulary::parse(b, "vocab/x.voc");
            ADD_FAILURE() << "accepted: " << why;
        } catch (const sightline::Error& e) {
            EXPECT_EQ(e.code(), sightline::ErrorCode::data_loss);
            EXPECT_NE(std::string(e.what()).find("vocab/x.voc"), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
        }
    };
    auto flipped = bytes;
    flipped[bytes.size() / 2] ^= 0x40;
    expect_loss(flipped, "checksum");
    expect_loss(std::vector<std::uint8_t>(bytes.begin(), bytes.end() - 10), "truncated");
    auto magic = bytes;
    magic[0] = 'X';
    expect_loss(magic, "not a sightline vocabulary");
    auto version = bytes;
    version[4] = 99;
    expect_loss(version, "version 99");
    expect_loss({}, "not a sightline vocabulary");
}

TEST(Vocabulary, RefusesBadTrainingInputAndForeignDescriptors) {
    EXPECT_THROW(Vocabulary::train({}, small(), "x"), sightline::Error);
    cv::Mat a(10, 32, CV_8U, cv::Scalar(1)), b(10, 64, CV_32F, cv::Scalar(0));
    EXPECT_THROW(Vocabulary::train({a, b}, small(), "x"), sightline::Error);
    cv::Mat centres;
    auto v = Vocabulary::train(clustered(CV_8U, 8, 50, 4, centres), small(), "x");
    try {
        v.quantize(b);
        ADD_FAILURE() << "float descriptors accepted by a binary vocabulary";
    } catch (const sightline::Error& e) {
        EXPECT_NE(std::string(e.what()).find("CV_32F x 64"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("CV_8U x 32"), std::string::npos) << e.what();
    }
}

TEST(DescriptorMismatch, ComparesTheNameAndEveryDescriptorField) {
    const std::string trained = "x:v2;cap=500;size=64;sign=0";
    EXPECT_EQ(descriptor_mismatch(trained, "x:v2;size=64;sign=0"), "");
    EXPECT_EQ(descriptor_mismatch(trained, "x:v2"), "");
    EXPECT_EQ(descriptor_mismatch(trained, "x:v3;size=64"), "x:v3, trained with x:v2");
    EXPECT_EQ(descriptor_mismatch(trained, "y:v2;size=64"), "y:v2, trained with x:v2");
    EXPECT_EQ(descriptor_mismatch(trained, "x:v2;size=128"), "size=128, trained with size=64");
    EXPECT_EQ(descriptor_mismatch(trained, "x:v2;grid=4"), "grid=4, trained with no grid");
    // A key is a whole key: "size" is not found as the start of "sizes=64".
    EXPECT_EQ(descriptor_mismatch("x:v2;sizes=64", "x:v2;size=64"), "size=64, trained with no size");
    EXPECT_EQ(descriptor_mismatch("x:v2;size=64;plain", "x:v2;plain"), "");
    EXPECT_EQ(descriptor_mismatch("x:v2;size=64", "x:v2;plain"), "plain, trained with no plain");
}

TEST(Vocabulary, IdfFavoursRareWords) {
    // Centre 0 appears in every image, the others in one image each.
    cv::Mat centres;
    clustered(CV_8U, 8, 1, 1, centres);
    std::vector<cv::Mat> images;
    for (int i = 1; i < 8; ++i) {
        cv::Mat m(40, 32, CV_8U);
        for (int r = 0; r < 20; ++r) centres.row(0).copyTo(m.row(r));
        for (int r = 20; r < 40; ++r) centres.row(i).copyTo(m.row(r));
        images.push_back(m);
    }
    auto p = small();
    p.branching = 8;
    p.depth = 1;
    auto v = Vocabulary::train(images, p, "x");
    const auto common = v.quantize_row(centres.ptr(0));
    for (int i = 1; i < 8; ++i) EXPECT_GT(v.idf(v.quantize_row(centres.ptr(i))), v.idf(common));
}

}  // namespace
