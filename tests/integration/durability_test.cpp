// Index snapshots and the gallery's change journal, with index-vocab and index-bruteforce on a real
// local storage: a restart loads the snapshot and replays only what changed after it; a damaged or
// foreign snapshot is rebuilt from the feature records; a vocabulary made for another extractor is
// refused by name.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <sightline/vocabulary.hpp>

#include "sightline/host/config_loader.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/service.hpp"
#include "test_support.hpp"

namespace {

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

constexpr const char* kOrb = "{ type: orb, max_features: 500, fast_threshold: 12 }";

std::string config_text(const fs::path& dir, const std::string& index, const std::string& features = kOrb) {
    return "plugins: { paths: [" + yq(plugin_dir()) + "] }\n"
           "storages:\n"
           "  gallery: { type: local, root: " + yq(dir / "gallery") + ", fsync: false }\n"
           "  vocab: { type: local, root: " + yq(dir / "vocab") + ", fsync: false }\n"
           "gallery: { storage: gallery }\n"
           "pipelines:\n  p:\n    features: " + features + "\n    index: " + index + "\n"
           "    verify: { rematch: false, min_inliers: 10, min_inlier_ratio: 0.1 }\n"
           "limits: { workers: 2 }\nlogging: { level: warn }\n";
}

std::unique_ptr<Host> make(const fs::path& dir, const std::string& index, HostOptions options = {},
                           const std::string& features = kOrb) {
    write_text(dir / "config.yaml", config_text(dir, index, features));
    return std::make_unique<Host>(load_config_file(dir / "config.yaml"), std::vector<fs::path>{}, options);
}

// A small vocabulary trained on the demo gallery for the test's ORB configuration.
void train_vocabulary(const fs::path& dir, const std::string& features = kOrb) {
    auto host = make(dir, "{ type: bruteforce }", HostOptions{.indexes = false}, features);
    std::vector<cv::Mat> per_image;
    for (const auto& f : gallery_images()) per_image.push_back(host->pipeline().extract_item("t", read_bytes(f)).features.descriptors);
    Vocabulary::TrainParams p;
    p.branching = 8;
    p.depth = 3;
    auto v = Vocabulary::train(per_image, p, host->pipeline().extractor().signature());
    auto bytes = v.serialize();
    host->storage("vocab")->put("test.voc", bytes);
}

const std::string kVocab = "{ type: vocab, vocabulary: test.voc, hamming_threshold: 12 }";

Result recognize(Host& host, const fs::path& image) {
    Request r;
    r.id = "q";
    r.image = read_bytes(image);
    r.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    return host.pipeline().recognize(r);
}

class Durability : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        if (GetParam() == kVocab) train_vocabulary(dir_.path());
    }
    TempDir dir_{"sightline-durability"};
};

TEST_P(Durability, RestartLoadsTheSnapshotAndReplaysOnlyLaterChanges) {
    const auto images = gallery_images();
    ASSERT_GE(images.size(), 12u);
    {
        auto host = make(dir_.path(), GetParam());
        HostService service(*host);
        service.load_gallery();
        for (int i = 0; i < 8; ++i) service.put_item("item" + std::to_string(i), read_bytes(images[i]), "{}");
        host->save_snapshots();
        // After the snapshot: three more, one removed, one replaced by another image; then the
        // process "dies" (no snapshot at exit).
        for (int i = 8; i < 11; ++i) service.put_item("item" + std::to_string(i), read_bytes(images[i]), "{}");
        service.remove_item("item2");
        service.put_item("item3", read_bytes(images[11]), "{\"v\": 2}");
    }
    auto host = make(dir_.path(), GetParam());
    auto stats = host->pipeline().load(host->gallery());
    EXPECT_TRUE(stats.from_snapshot);
    EXPECT_EQ(stats.replayed, 5u);  // item8, item9, item10, item2, item3
    EXPECT_EQ(host->pipeline().size(), 10u);
    EXPECT_FALSE(host->pipeline().contains("item2"));
    for (const char* id : {"item0", "item8", "item10", "item3"}) EXPECT_TRUE(host->pipeline().contains(id)) << id;
    // The replaced item answers with its new image and metadata, the old image no longer matches it.
    auto r = recognize(*host, images[11]);
    ASSERT_FALSE(r.matches.empty()) << (r.error ? r.error->message : "");
    EXPECT_EQ(r.matches[0].id, "item3");
    EXPECT_THAT(r.matches[0].metadata_json, HasSubstr("\"v\":2"));
    auto old = recognize(*host, images[3]);
    for (const auto& m : old.matches) EXPECT_NE(m.id, "item3");
    auto kept = recognize(*host, images[9]);
    ASSERT_FALSE(kept.matches.empty());
    EXPECT_EQ(kept.matches[0].id, "item9");
}

TEST_P(Durability, SnapshotNeedsNoFeatureRecordsAndTruncatesTheJournal) {
    const auto images = gallery_images();
    {
        auto host = make(dir_.path(), GetParam());
        HostService service(*host);
        service.load_gallery();
        for (int i = 0; i < 6; ++i) service.put_item("item" + std::to_string(i), read_bytes(images[i]), "{}");
        host->save_snapshots();
        // Only the newest journal entry stays: it carries the position across restarts.
        EXPECT_EQ(host->gallery().journal_since(0).size(), 1u);
    }
    // Without any feature record, start-up still has every item: they come from the snapshot.
    for (const auto& e : fs::recursive_directory_iterator(dir_.path() / "gallery"))
        if (e.path().extension() == ".rec") fs::remove(e.path());
    auto host = make(dir_.path(), GetParam());
    auto stats = host->pipeline().load(host->gallery());
    EXPECT_TRUE(stats.from_snapshot);
    EXPECT_EQ(stats.computed, 0u);
    EXPECT_EQ(host->pipeline().size(), 6u);
    auto r = recognize(*host, images[4]);
    ASSERT_FALSE(r.matches.empty());
    EXPECT_EQ(r.matches[0].id, "item4");
}

TEST_P(Durability, ADamagedSnapshotIsRebuiltFromTheRecords) {
    const auto images = gallery_images();
    {
        auto host = make(dir_.path(), GetParam());
        HostService service(*host);
        service.load_gallery();
        for (int i = 0; i < 5; ++i) service.put_item("item" + std::to_string(i), read_bytes(images[i]), "{}");
        host->save_snapshots();
    }
    fs::path snap;
    for (const auto& e : fs::recursive_directory_iterator(dir_.path() / "gallery"))
        if (e.path().extension() == ".snap") snap = e.path();
    ASSERT_FALSE(snap.empty());
    auto bytes = read_bytes(snap);
    bytes[bytes.size() / 2] ^= 0x10;
    write_bytes(snap, bytes);
    auto host = make(dir_.path(), GetParam());
    auto stats = host->pipeline().load(host->gallery());
    EXPECT_FALSE(stats.from_snapshot);
    EXPECT_EQ(stats.loaded, 5u);  // from the feature records, nothing extracted
    EXPECT_EQ(host->pipeline().size(), 5u);
}

TEST_P(Durability, ASnapshotOfAnotherIndexConfigurationIsNotUsed) {
    const auto images = gallery_images();
    {
        auto host = make(dir_.path(), GetParam());
        HostService service(*host);
        service.load_gallery();
        for (int i = 0; i < 4; ++i) service.put_item("item" + std::to_string(i), read_bytes(images[i]), "{}");
        host->save_snapshots();
    }
    // Same extractor (same signature), other index keys: the snapshot would be wrong for them.
    std::string other = GetParam() == kVocab ? "{ type: vocab, vocabulary: test.voc, hamming_threshold: 8 }"
                                             : "{ type: bruteforce, ratio: 0.7 }";
    auto host = make(dir_.path(), other);
    auto stats = host->pipeline().load(host->gallery());
    EXPECT_FALSE(stats.from_snapshot);
    EXPECT_EQ(host->pipeline().size(), 4u);
}

INSTANTIATE_TEST_SUITE_P(Indexes, Durability, ::testing::Values(kVocab, std::string("{ type: bruteforce }")),
                         [](const auto& info) { return info.param == kVocab ? "vocab" : "bruteforce"; });

TEST(VocabIndex, AVocabularyForOtherDescriptorsIsRefusedByName) {
    TempDir dir("sightline-vocab-signature");
    train_vocabulary(dir.path());  // for patch_size 31
    Error e = capture_error([&] {
        make(dir.path(), kVocab, {}, "{ type: orb, max_features: 500, fast_threshold: 12, patch_size: 25 }");
    });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("pipelines.p.index"));
    EXPECT_THAT(e.what(), HasSubstr("vocabulary 'test.voc' was trained for the extractor"));
    EXPECT_THAT(e.what(), HasSubstr("(patch_size=25, trained with patch_size=31)"));
    EXPECT_THAT(e.what(), HasSubstr("sightline vocab train"));
}

// A keypoint cap or detector threshold chooses which keypoints are described, not what their
// descriptors mean: the vocabulary serves the pipeline, and recognises with it.
TEST(VocabIndex, AVocabularyServesAnotherKeypointCapAndThreshold) {
    TempDir dir("sightline-vocab-selection");
    train_vocabulary(dir.path());  // for max_features 500, fast_threshold 12
    const std::string other = "{ type: orb, max_features: 700, fast_threshold: 10, grid: 4 }";
    auto host = make(dir.path(), kVocab, {}, other);
    EXPECT_THAT(host->pipeline().signature(), HasSubstr("max_features=700"));
    const auto images = gallery_images();
    HostService service(*host);
    service.load_gallery();
    for (int i = 0; i < 6; ++i) service.put_item("item" + std::to_string(i), read_bytes(images[i]), "{}");
    auto r = recognize(*host, images[3]);
    ASSERT_FALSE(r.matches.empty());
    EXPECT_EQ(r.matches[0].id, "item3");
}

TEST(VocabIndex, AMissingOrDamagedVocabularyIsAClearError) {
    TempDir dir("sightline-vocab-missing");
    Error missing = capture_error([&] { make(dir.path(), kVocab); });
    EXPECT_EQ(missing.code(), ErrorCode::not_found);
    EXPECT_THAT(missing.what(), HasSubstr("vocabulary 'test.voc' is not in storage 'vocab'"));
    train_vocabulary(dir.path());
    auto bytes = read_bytes(dir / "vocab" / "test.voc");
    bytes[100] ^= 1;
    write_bytes(dir / "vocab" / "test.voc", bytes);
    Error damaged = capture_error([&] { make(dir.path(), kVocab); });
    EXPECT_EQ(damaged.code(), ErrorCode::data_loss);
    EXPECT_THAT(damaged.what(), HasSubstr("checksum"));
}

}  // namespace
