// The gallery through a Host built from a config file: items and feature records on disk, reuse
// of records after a restart (the extractor is not called), recomputation of damaged or foreign
// records, removal, and input checks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>

#include "sightline/host/feature_record.hpp"
#include "sightline/host/host.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

constexpr std::size_t kItems = 5;

class GalleryTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto all = gallery_images();
        ASSERT_GE(all.size(), kItems) << "demo gallery missing in " << gallery_images_dir();
        images_.assign(all.begin(), all.begin() + kItems);
    }

    // Writes a config to the temp dir and builds a Host from it. The counting extractor appends a
    // byte to count_file per extract() call.
    std::unique_ptr<Host> make_host(int max_features = 300) {
        const fs::path cfg = dir_ / "sightline.yaml";
        std::string text;
        text += "plugins: { paths: [" + yq(plugin_dir()) + ", " + yq(fixture_good_dir()) + "] }\n";
        text += "storages:\n  main: { type: local, root: " + yq(store()) + ", fsync: false }\n";
        text += "gallery: { storage: main, images: images/, features: features/ }\n";
        text += "pipelines:\n";
        text += "  counted:\n";
        text += "    features: { type: counting, count_file: " + yq(count_file()) +
                ", max_features: " + std::to_string(max_features) + " }\n";
        text += "    index: { type: bruteforce }\n";
        text += "    gallery_size: 640\n";
        text += "limits: { workers: 2, queue: 8 }\n";
        text += "logging: { level: error }\n";
        write_text(cfg, text);
        return std::make_unique<Host>(load_config_file(cfg.string()));
    }

    fs::path store() const { return dir_ / "store"; }
    fs::path count_file() const { return dir_ / "extract-calls"; }
    std::uintmax_t extract_calls() const {
        std::error_code ec;
        auto n = fs::file_size(count_file(), ec);
        return ec ? 0 : n;
    }
    std::string id_of(const fs::path& p) const { return p.stem().string(); }

    // Puts every image into the gallery and indexes it.
    void ingest(Host& host) {
        for (const auto& p : images_) {
            host.gallery().put(id_of(p), read_bytes(p), R"({"title": ")" + id_of(p) + R"("})");
            host.pipeline().add(host.gallery(), id_of(p));
        }
    }

    // The files of an item's images (images/<id>/<name>.<ext>).
    std::vector<fs::path> image_files(const std::string& id) const {
        std::vector<fs::path> out;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(store() / "images" / id, ec)) out.push_back(e.path());
        return out;
    }

    fs::path record_file(Host& host, const std::string& id) {
        return store() / host.gallery().record_key(host.pipeline().signature(), id);
    }

    TempDir dir_{"sightline-gallery"};
    std::vector<fs::path> images_;
};

TEST_F(GalleryTest, IngestStoresImagesMetadataAndRecords) {
    auto host = make_host();
    ingest(*host);
    Gallery& g = host->gallery();
    Pipeline& p = host->pipeline();
    EXPECT_EQ(extract_calls(), kItems);
    EXPECT_EQ(p.size(), kItems);

    auto ids = g.ids();
    std::sort(ids.begin(), ids.end());
    std::vector<std::string> expected;
    for (const auto& i : images_) expected.push_back(id_of(i));
    EXPECT_EQ(ids, expected);

    for (const auto& path : images_) {
        const std::string id = id_of(path);
        SCOPED_TRACE(id);
        EXPECT_TRUE(g.contains(id));
        EXPECT_EQ(g.image(id), read_bytes(path));
        EXPECT_TRUE(fs::exists(store() / "images" / (id + ".item")));
        ASSERT_EQ(image_files(id).size(), 1u);
        EXPECT_EQ(image_files(id)[0].extension(), ".jpg");
        EXPECT_THAT(g.metadata(id), HasSubstr("\"title\""));
        auto bytes = g.record(p.signature(), id);
        ASSERT_TRUE(bytes.has_value()) << "no feature record";
        EXPECT_TRUE(fs::exists(record_file(*host, id)));
        FeatureRecord rec = decode_record(*bytes, "test");
        EXPECT_EQ(rec.item_id, id);
        EXPECT_EQ(rec.signature, p.signature());
        // 720x360 images scaled to the 640 gallery size.
        EXPECT_EQ(rec.image_size, cv::Size(640, 320));
        EXPECT_GT(rec.features.keypoints.size(), 50u);
        EXPECT_LE(rec.features.keypoints.size(), 300u);
        EXPECT_EQ(rec.features.descriptors.rows, static_cast<int>(rec.features.keypoints.size()));
    }
    EXPECT_THAT(p.signature(), HasSubstr("max_features=300"));
    EXPECT_THAT(p.signature(), HasSubstr("gallery_size=640"));
    EXPECT_EQ(g.metadata("not-there"), "{}");
    EXPECT_FALSE(g.contains("not-there"));
}

TEST_F(GalleryTest, RestartLoadsEveryRecordAndExtractsNothing) {
    {
        auto host = make_host();
        ingest(*host);
    }
    ASSERT_EQ(extract_calls(), kItems);

    auto host = make_host();
    auto stats = host->pipeline().load(host->gallery(), &host->workers());
    EXPECT_EQ(stats.loaded, kItems);
    EXPECT_EQ(stats.computed, 0u);
    EXPECT_EQ(stats.damaged, 0u);
    EXPECT_EQ(stats.failed, 0u);
    EXPECT_EQ(host->pipeline().size(), kItems);
    EXPECT_EQ(extract_calls(), kItems) << "the extractor ran although every record was valid";

    // Also without a worker pool, and through Host::load_gallery.
    auto host2 = make_host();
    stats = host2->pipeline().load(host2->gallery());
    EXPECT_EQ(stats.loaded, kItems);
    EXPECT_EQ(stats.computed, 0u);
    auto host3 = make_host();
    host3->load_gallery();
    EXPECT_EQ(host3->pipeline().size(), kItems);
    EXPECT_EQ(extract_calls(), kItems);
}

TEST_F(GalleryTest, LoadComputesMissingRecordsAndStoresThem) {
    {
        auto host = make_host();
        // Items without records, e.g. copied in by hand.
        for (const auto& p : images_) host->gallery().put(id_of(p), read_bytes(p), "{}");
    }
    EXPECT_EQ(extract_calls(), 0u);
    {
        auto host = make_host();
        auto stats = host->pipeline().load(host->gallery(), &host->workers());
        EXPECT_EQ(stats.computed, kItems);
        EXPECT_EQ(stats.loaded, 0u);
        EXPECT_EQ(extract_calls(), kItems);
    }
    auto host = make_host();
    auto stats = host->pipeline().load(host->gallery(), &host->workers());
    EXPECT_EQ(stats.loaded, kItems);
    EXPECT_EQ(extract_calls(), kItems);
}

class DamagedRecordTest : public GalleryTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(DamagedRecordTest, IsDetectedRecomputedAndRepaired) {
    std::string victim;
    {
        auto host = make_host();
        ingest(*host);
        victim = id_of(images_[2]);
        fs::path rec = record_file(*host, victim);
        Bytes b = read_bytes(rec);
        ASSERT_GT(b.size(), 200u);
        if (GetParam() == "flip") b[b.size() / 2] ^= 0x40;
        else if (GetParam() == "truncate") b.resize(b.size() - 17);
        else if (GetParam() == "empty") b.clear();
        else if (GetParam() == "garbage") b.assign(b.size(), 0x5a);
        write_bytes(rec, b);
    }
    auto host = make_host();
    auto stats = host->pipeline().load(host->gallery(), &host->workers());
    EXPECT_EQ(stats.damaged, 1u);
    EXPECT_EQ(stats.computed, 1u);
    EXPECT_EQ(stats.loaded, kItems - 1);
    EXPECT_EQ(stats.failed, 0u);
    EXPECT_EQ(host->pipeline().size(), kItems);
    EXPECT_EQ(extract_calls(), kItems + 1);

    // The record was rewritten and is valid now.
    auto bytes = host->gallery().record(host->pipeline().signature(), victim);
    ASSERT_TRUE(bytes.has_value());
    FeatureRecord rec = decode_record(*bytes, "repaired");
    EXPECT_EQ(rec.item_id, victim);
    EXPECT_GT(rec.features.keypoints.size(), 0u);

    auto again = make_host();
    stats = again->pipeline().load(again->gallery());
    EXPECT_EQ(stats.loaded, kItems);
    EXPECT_EQ(stats.damaged, 0u);
}

INSTANTIATE_TEST_SUITE_P(Damage, DamagedRecordTest, ::testing::Values("flip", "truncate", "empty", "garbage"));

TEST_F(GalleryTest, RecordsOfAnotherSignatureAreRecomputed) {
    std::string old_signature;
    {
        auto host = make_host(300);
        ingest(*host);
        old_signature = host->pipeline().signature();
    }
    auto host = make_host(200);
    ASSERT_NE(host->pipeline().signature(), old_signature);
    auto stats = host->pipeline().load(host->gallery(), &host->workers());
    EXPECT_EQ(stats.loaded, 0u);
    EXPECT_EQ(stats.computed, kItems);
    EXPECT_EQ(extract_calls(), 2 * kItems);
    for (const auto& p : images_) {
        auto bytes = host->gallery().record(host->pipeline().signature(), id_of(p));
        ASSERT_TRUE(bytes.has_value());
        FeatureRecord rec = decode_record(*bytes, "new");
        EXPECT_EQ(rec.signature, host->pipeline().signature());
        EXPECT_LE(rec.features.keypoints.size(), 200u);
        // The old records are still there, untouched, for the old signature.
        EXPECT_TRUE(host->gallery().record(old_signature, id_of(p)).has_value());
    }
}

TEST_F(GalleryTest, ARecordWithAForeignSignatureUnderOurKeyIsNotUsed) {
    auto host = make_host();
    ingest(*host);
    const std::string id = id_of(images_[0]);
    const std::string sig = host->pipeline().signature();
    // A valid record, but made under another signature (and another item id), stored under ours.
    FeatureRecord foreign = decode_record(*host->gallery().record(sig, id), "x");
    foreign.signature = "orb:v0;something-else";
    host->gallery().put_record(sig, id, encode_record(foreign));
    FeatureRecord wrong_id = decode_record(*host->gallery().record(sig, id_of(images_[1])), "x");
    wrong_id.item_id = id_of(images_[3]);
    host->gallery().put_record(sig, id_of(images_[1]), encode_record(wrong_id));

    auto fresh = make_host();
    auto stats = fresh->pipeline().load(fresh->gallery(), &fresh->workers());
    EXPECT_EQ(stats.loaded, kItems - 2);
    EXPECT_EQ(stats.computed, 2u);
    EXPECT_EQ(extract_calls(), kItems + 2);
    EXPECT_EQ(decode_record(*fresh->gallery().record(sig, id), "x").signature, sig);
    EXPECT_EQ(decode_record(*fresh->gallery().record(sig, id_of(images_[1])), "x").item_id, id_of(images_[1]));
}

TEST_F(GalleryTest, RemoveDeletesImageMetadataAndEveryRecord) {
    {
        auto host = make_host(300);
        ingest(*host);
    }
    auto host = make_host(250);  // a second signature, so the item has two records
    host->pipeline().load(host->gallery());
    const std::string id = id_of(images_[1]);
    auto keys_of = [&](Host& h, const std::string& item) {
        std::vector<std::string> out;
        for (const auto& k : h.gallery().storage().list("")) {
            auto name = k.substr(k.rfind('/') + 1);
            if (name.rfind(item + ".", 0) == 0 || k.rfind("images/" + item + "/", 0) == 0) out.push_back(k);
        }
        return out;
    };
    ASSERT_EQ(keys_of(*host, id).size(), 4u);  // image, item record (metadata), two records

    EXPECT_TRUE(host->gallery().remove(id));
    EXPECT_TRUE(host->pipeline().remove(id));
    EXPECT_TRUE(keys_of(*host, id).empty());
    EXPECT_FALSE(host->gallery().contains(id));
    EXPECT_FALSE(host->gallery().image(id).has_value());
    EXPECT_EQ(host->gallery().metadata(id), "{}");
    EXPECT_EQ(host->pipeline().size(), kItems - 1);
    auto ids = host->gallery().ids();
    EXPECT_EQ(std::find(ids.begin(), ids.end(), id), ids.end());
    // The other items keep their files.
    EXPECT_EQ(keys_of(*host, id_of(images_[0])).size(), 4u);
    // Removing again reports nothing removed.
    EXPECT_FALSE(host->gallery().remove(id));
}

// Another storage's objects, counting the keys its list() calls return.
class ListCounting final : public Storage {
public:
    explicit ListCounting(std::shared_ptr<Storage> inner) : inner_(std::move(inner)) {}
    void put(const std::string& key, std::span<const std::uint8_t> bytes) override { inner_->put(key, bytes); }
    std::optional<Bytes> get(const std::string& key) const override { return inner_->get(key); }
    bool remove(const std::string& key) override { return inner_->remove(key); }
    bool exists(const std::string& key) const override { return inner_->exists(key); }
    std::vector<std::string> list(const std::string& prefix) const override {
        auto keys = inner_->list(prefix);
        listed += keys.size();
        return keys;
    }
    mutable std::size_t listed = 0;

private:
    std::shared_ptr<Storage> inner_;
};

TEST_F(GalleryTest, RemoveListsNoOtherItemsRecords) {
    {
        auto host = make_host(300);
        ingest(*host);
    }
    auto host = make_host(250);  // a second signature: every item has two records
    host->pipeline().load(host->gallery());
    auto counting = std::make_shared<ListCounting>(host->storage("main"));
    Gallery gallery(counting, "images/", "features/");
    const std::string id = id_of(images_[1]);
    counting->listed = 0;
    EXPECT_TRUE(gallery.remove(id));
    // Deleting one item costs a look per signature, not a walk over the other items' records
    // (2 x 5 of them here, and a million in a large gallery).
    EXPECT_LE(counting->listed, 4u);
    const auto keys = host->gallery().storage().list("features/");
    for (const auto& p : images_) {
        const auto n = std::count_if(keys.begin(), keys.end(), [&](const std::string& k) {
            return k.size() > id_of(p).size() + 5 && k.ends_with("/" + id_of(p) + ".rec");
        });
        EXPECT_EQ(n, id_of(p) == id ? 0 : 2) << id_of(p);
    }
}

TEST_F(GalleryTest, ReplacingAnItemWithAnotherFormatLeavesOneImage) {
    auto host = make_host();
    const std::string id = "item";
    host->gallery().put(id, read_bytes(images_[0]), "{}");
    cv::Mat img(50, 80, CV_8UC3, cv::Scalar(10, 200, 30));
    std::vector<std::uint8_t> png;
    ASSERT_TRUE(cv::imencode(".png", img, png));
    host->gallery().put(id, png, R"({"v": 2})");
    ASSERT_EQ(image_files(id).size(), 1u);
    EXPECT_EQ(image_files(id)[0].extension(), ".png");
    EXPECT_EQ(host->gallery().image(id), Bytes(png.begin(), png.end()));
    EXPECT_THAT(host->gallery().metadata(id), HasSubstr("\"v\":2"));
    EXPECT_EQ(host->gallery().ids(), std::vector<std::string>{id});
}

// Images copied in by hand, and galleries from before item records: images/<id>.<ext> beside an
// optional images/<id>.json. They are read as they are; their next put moves them to the item
// layout, leaving none of the old files.
TEST_F(GalleryTest, ItemsInTheOldLayoutAreReadAndMovedByTheirNextPut) {
    fs::create_directories(store() / "images");
    fs::copy_file(images_[0], store() / "images" / "old.jpg");
    write_text(store() / "images" / "old.json", R"({"title": "old"})");
    fs::copy_file(images_[1], store() / "images" / "bare.jpg");
    auto host = make_host();
    Gallery& g = host->gallery();
    auto ids = g.ids();
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(ids, (std::vector<std::string>{"bare", "old"}));
    EXPECT_EQ(g.image("old"), read_bytes(images_[0]));
    EXPECT_THAT(g.metadata("old"), HasSubstr("\"old\""));
    EXPECT_EQ(g.metadata("bare"), "{}");
    host->pipeline().load(g);
    EXPECT_EQ(host->pipeline().size(), 2u);

    g.put("old", read_bytes(images_[2]), R"({"title": "new"})");
    EXPECT_FALSE(fs::exists(store() / "images" / "old.jpg"));
    EXPECT_FALSE(fs::exists(store() / "images" / "old.json"));
    EXPECT_EQ(g.image("old"), read_bytes(images_[2]));
    EXPECT_THAT(g.metadata("old"), HasSubstr("\"new\""));
    EXPECT_TRUE(g.remove("bare"));
    EXPECT_FALSE(fs::exists(store() / "images" / "bare.jpg"));
    EXPECT_EQ(g.ids(), std::vector<std::string>{"old"});
}

TEST_F(GalleryTest, InvalidIdsAreRejected) {
    auto host = make_host();
    const Bytes image = read_bytes(images_[0]);
    for (const std::string& id : {std::string(""), std::string("../x"), std::string("a/b"), std::string(".hidden"),
                                  std::string("sp ace"), std::string(129, 'a'), std::string("semi;colon"),
                                  std::string("nul\0id", 6)}) {
        SCOPED_TRACE("id '" + id + "'");
        EXPECT_TRUE(invalid_id_reason(id).has_value());
        Error e = capture_error([&] { host->gallery().put(id, image, "{}"); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        EXPECT_THAT(e.what(), HasSubstr("invalid item id"));
        EXPECT_THROW(host->gallery().remove(id), Error);
        EXPECT_THROW((void)host->gallery().image(id), Error);
        EXPECT_FALSE(host->gallery().contains(id));
    }
    EXPECT_FALSE(invalid_id_reason(std::string(128, 'a')).has_value());
    EXPECT_FALSE(invalid_id_reason("Poster_2016-v1.2").has_value());
    EXPECT_TRUE(host->gallery().ids().empty());
    EXPECT_FALSE(fs::exists(store() / "images"));
}

TEST_F(GalleryTest, MetadataMustBeAJsonObject) {
    auto host = make_host();
    const Bytes image = read_bytes(images_[0]);
    for (const char* meta : {"{not json", "[1, 2]", "\"a string\"", "42", "{\"a\": 1} trailing"}) {
        SCOPED_TRACE(meta);
        Error e = capture_error([&] { host->gallery().put("item", image, meta); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        EXPECT_THAT(e.what(), HasSubstr("not a JSON object"));
    }
    EXPECT_FALSE(host->gallery().contains("item"));
    host->gallery().put("item", image, "");
    EXPECT_EQ(host->gallery().metadata("item"), "{}");
}

TEST_F(GalleryTest, NonImagesAreRejected) {
    auto host = make_host();
    Error e = capture_error([&] { host->gallery().put("item", to_bytes("definitely not an image"), "{}"); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    e = capture_error([&] { host->gallery().put("item", Bytes{}, "{}"); });
    EXPECT_THAT(e.what(), HasSubstr("empty"));
    EXPECT_FALSE(host->gallery().contains("item"));
}

TEST_F(GalleryTest, AnUndecodableItemFailsLoadWithoutStoppingIt) {
    auto host = make_host();
    ingest(*host);
    // An image whose header is fine but whose body is cut short (put() only reads the header of
    // PNGs, so this one gets in).
    cv::Mat img(64, 64, CV_8UC3, cv::Scalar(1, 2, 3));
    std::vector<std::uint8_t> png;
    ASSERT_TRUE(cv::imencode(".png", img, png));
    png.resize(40);
    host->gallery().put("broken", png, "{}");

    auto fresh = make_host();
    auto stats = fresh->pipeline().load(fresh->gallery(), &fresh->workers());
    EXPECT_EQ(stats.failed, 1u);
    EXPECT_EQ(stats.loaded, kItems);
    EXPECT_EQ(fresh->pipeline().size(), kItems);
}

}  // namespace
