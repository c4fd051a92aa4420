// Index conformance: one parameterised suite that every index plugin configuration in kIndexCases
// passes, loaded as the real plugin library: add/search with the gallery keypoints handed back,
// empty index, remove, re-add, replace, size, save/load, damaged snapshots, concurrent searches
// during adds, and bad descriptor types. Below it, index-faiss's own cases (one descriptor layout
// per index, tombstone rebuilds, checksummed snapshots, its config schema).
//
// Adding an index configuration is one row in kIndexCases. A row whose index needs something in
// a storage before it is constructed (a vocabulary file, say) gives a `setup` hook that receives
// the row's config, the plugin registry, a scratch directory and the test's descriptor generator,
// and returns the Context to construct the index with (see StorageContext and local_storage()).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>

#include <sightline/vocabulary.hpp>

#include "sightline/host/config_loader.hpp"
#include "sightline/host/plugin_registry.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

constexpr int kBinaryBytes = 32;  // ORB
constexpr int kFloatDims = 64;    // SURF-64
// A query keypoint is its gallery keypoint moved by this much, so every correspondence can be
// checked against the keypoint that was added.
const cv::Point2f kQueryOffset(3.0f, 4.0f);

// ---- synthetic features -----------------------------------------------------------------------

// Random descriptors: uniform bytes (binary, CV_8U x 32) or unit-length Gaussian vectors
// (float, CV_32F x 64). Far apart from each other, so a descriptor's true nearest neighbour is
// known once noise is small.
cv::Mat random_descriptors(int type, int rows, std::uint64_t seed) {
    cv::RNG rng(seed);
    if (type == CV_8U) {
        cv::Mat d(rows, kBinaryBytes, CV_8U);
        rng.fill(d, cv::RNG::UNIFORM, 0, 256);
        return d;
    }
    cv::Mat d(rows, kFloatDims, CV_32F);
    rng.fill(d, cv::RNG::NORMAL, 0.0, 1.0);
    for (int r = 0; r < rows; ++r) cv::normalize(d.row(r), d.row(r));
    return d;
}

Features random_item(int type, int rows, std::uint64_t seed) {
    Features f;
    f.descriptors = random_descriptors(type, rows, seed);
    cv::RNG rng(seed * 7919 + 13);
    for (int r = 0; r < rows; ++r)
        f.keypoints.emplace_back(cv::Point2f(rng.uniform(0.f, 800.f), rng.uniform(0.f, 600.f)), 8.f);
    return f;
}

// The item seen again: every descriptor with a little noise (3 flipped bits of 256; Gaussian
// noise of sigma 0.01 per value, renormalised) and every keypoint moved by kQueryOffset.
Features noisy_query(const Features& item, std::uint64_t seed) {
    cv::RNG rng(seed);
    Features q;
    q.descriptors = item.descriptors.clone();
    if (q.descriptors.type() == CV_8U) {
        for (int r = 0; r < q.descriptors.rows; ++r) {
            int flipped[3] = {-1, -1, -1};
            for (int i = 0; i < 3;) {
                int bit = rng.uniform(0, kBinaryBytes * 8);
                if (bit == flipped[0] || bit == flipped[1]) continue;
                flipped[i++] = bit;
                q.descriptors.at<std::uint8_t>(r, bit / 8) ^= static_cast<std::uint8_t>(1u << (bit % 8));
            }
        }
    } else {
        cv::Mat noise(q.descriptors.size(), CV_32F);
        rng.fill(noise, cv::RNG::NORMAL, 0.0, 0.01);
        q.descriptors += noise;
        for (int r = 0; r < q.descriptors.rows; ++r) cv::normalize(q.descriptors.row(r), q.descriptors.row(r));
    }
    for (const auto& k : item.keypoints) q.keypoints.emplace_back(k.pt + kQueryOffset, k.size);
    return q;
}

float max_noise_distance(int type) { return type == CV_8U ? 3.0f : 0.2f; }

std::string item_id(int i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "item-%03d", i);
    return buf;
}

const Candidate* find_candidate(const std::vector<Candidate>& cands, const std::string& id) {
    for (const auto& c : cands)
        if (c.id == id) return &c;
    return nullptr;
}

// How many of the candidate's correspondences pair a query keypoint with the gallery keypoint it
// came from (and at a noise-sized distance).
// max_distance < 0: the descriptor noise bound of the type; position_tolerance: how far an index
// may round a keypoint position.
std::size_t true_correspondences(const Candidate& c, int type, float max_distance = -1,
                                 float position_tolerance = 1e-3f) {
    const float bound = max_distance < 0 ? max_noise_distance(type) : max_distance;
    std::size_t n = 0;
    for (const auto& m : c.correspondences)
        if (cv::norm(m.query - kQueryOffset - m.gallery) < position_tolerance && m.distance <= bound) ++n;
    return n;
}

// ---- the table ---------------------------------------------------------------------------------

// What a setup hook gets.
struct IndexSetup {
    const Config& config;        // the row's index section, as validated by the host
    PluginRegistry& registry;    // every real plugin (storage-local for a storage, say)
    const fs::path& scratch;     // a fresh directory, removed after the test
    int descriptor_type;         // CV_8U or CV_32F, as the row says
    // The test's generator: rows x (32 bytes | 64 floats) from a seed; the items the test adds
    // use seeds 1000 + i, so training data from other seeds does not contain them.
    std::function<cv::Mat(int rows, std::uint64_t seed)> descriptors;
};
// Returns the Context the index is constructed with (it lives as long as the test), or nullptr
// for a plain MinimalContext. Called once per index instance the test makes.
using SetupHook = std::function<std::unique_ptr<Context>(const IndexSetup&)>;

struct IndexCase {
    std::string name;     // test name suffix: letters, digits, underscores
    std::string yaml;     // the pipeline's `index:` section, `type` included
    int descriptor_type;  // CV_8U (binary, 32 bytes) or CV_32F (float, 64 values)
    SetupHook setup = nullptr;
    // Indexes that do not compare descriptors (index-vocab: words and embedding signatures)
    // report another distance, score by something other than votes and may round positions.
    float max_distance = -1;          // < 0: the descriptor noise bound
    bool score_is_votes = true;       // score == number of correspondences
    float position_tolerance = 1e-3f;
};

void PrintTo(const IndexCase& c, std::ostream* os) { *os << c.name << " " << c.yaml; }

// A Context with named storages, for setup hooks.
class [[maybe_unused]] StorageContext final : public Context {
public:
    StorageContext(Config config, std::map<std::string, std::shared_ptr<Storage>> storages)
        : config_(std::move(config)), storages_(std::move(storages)) {}
    const Config& config() const override { return config_; }
    std::shared_ptr<spdlog::logger> logger() const override { return host::make_logger("index-conformance"); }
    Metrics& metrics() const override { return metrics_; }
    std::shared_ptr<Storage> storage(const std::string& name) const override {
        auto it = storages_.find(name);
        if (it == storages_.end()) throw Error(ErrorCode::not_found, "no storage named '" + name + "' in this test");
        return it->second;
    }

private:
    Config config_;
    std::map<std::string, std::shared_ptr<Storage>> storages_;
    mutable host::MetricsRegistry metrics_;
};

// A storage-local rooted at `root`, built from the real plugin.
[[maybe_unused]] std::shared_ptr<Storage> local_storage(PluginRegistry& registry, const fs::path& root) {
    const LoadedPlugin& plugin = registry.get(PluginKind::storage, "local");
    YAML::Node node;
    node["type"] = "local";
    node["root"] = root.string();
    node["fsync"] = false;
    MinimalContext ctx(Config(node, "conformance.yaml", "storages.test", plugin.schema()));
    return registry.create<PluginKind::storage>(plugin, ctx);
}

// index-vocab's vocabulary for the synthetic descriptors: two words, so a noisy copy stays in its
// descriptor's word and the embedding signature does the telling apart (random descriptors have
// no cluster structure a deeper tree could use).
std::unique_ptr<Context> vocab_setup(const IndexSetup& s) {
    std::vector<cv::Mat> training;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) training.push_back(s.descriptors(100, seed));
    Vocabulary::TrainParams p;
    p.branching = 2;
    p.depth = 1;
    auto bytes = Vocabulary::train(training, p, "conformance").serialize();
    auto storage = local_storage(s.registry, s.scratch / "vocab");
    storage->put("test.voc", bytes);
    return std::make_unique<StorageContext>(s.config, std::map<std::string, std::shared_ptr<Storage>>{{"vocab", storage}});
}

const std::vector<IndexCase> kIndexCases = {
    {"vocab_binary", "{type: vocab, vocabulary: test.voc, hamming_threshold: 3}", CV_8U, vocab_setup, 3, false, 0.2f},
    {"vocab_float", "{type: vocab, vocabulary: test.voc, hamming_threshold: 3}", CV_32F, vocab_setup, 3, false, 0.2f},
    {"bruteforce_binary", "{type: bruteforce}", CV_8U},
    {"bruteforce_float", "{type: bruteforce}", CV_32F},
    {"faiss_hnsw_binary", "{type: faiss, method: hnsw}", CV_8U},
    {"faiss_flat_binary", "{type: faiss, method: flat}", CV_8U},
    {"faiss_flat_float", "{type: faiss, method: flat}", CV_32F},
    {"faiss_hnsw_float", "{type: faiss, method: hnsw, m: 16, ef_construction: 40, ef_search: 48}", CV_32F},
};

// ---- the suite -------------------------------------------------------------------------------

class IndexConformance : public ::testing::TestWithParam<IndexCase> {
protected:
    void SetUp() override {
        registry_.load_all();
        const YAML::Node node = YAML::Load(GetParam().yaml);
        ASSERT_TRUE(node["type"]) << "row " << GetParam().name << " has no type";
        name_ = node["type"].as<std::string>();
        plugin_ = registry_.find(PluginKind::index, name_);
        if (!plugin_) {
            const std::string file = plugin_file_name(PluginKind::index, name_);
            for (const auto& r : registry_.refused())
                if (r.file.filename() == file) FAIL() << r.file << " was refused: " << r.reason;
            // Optional plugins are skipped at configure time when their library is missing
            // (index-faiss without libfaiss-dev); say so instead of failing.
            GTEST_SKIP() << "index-" << name_ << " is not built in " << plugin_dir();
        }
        std::vector<std::string> errors;
        validate_section(node, plugin_->schema(), "conformance.yaml", "pipelines.p.index", {"type"}, errors);
        ASSERT_TRUE(errors.empty()) << ::testing::PrintToString(errors);
    }

    std::shared_ptr<Index> make() {
        Config config(YAML::Load(GetParam().yaml), "conformance.yaml", "pipelines.p.index", plugin_->schema());
        std::unique_ptr<Context> ctx;
        if (GetParam().setup)
            ctx = GetParam().setup(IndexSetup{config, registry_, scratch_.path(), type(),
                                              [t = type()](int rows, std::uint64_t seed) {
                                                  return random_descriptors(t, rows, seed);
                                              }});
        if (!ctx) ctx = std::make_unique<MinimalContext>(config, "index-" + name_);
        auto index = registry_.create<PluginKind::index>(*plugin_, *ctx);
        contexts_.push_back(std::move(ctx));
        return index;
    }

    int type() const { return GetParam().descriptor_type; }
    std::size_t truly(const Candidate& c) const {
        return true_correspondences(c, type(), GetParam().max_distance, GetParam().position_tolerance);
    }
    Features item(int i, int rows = 150) const { return random_item(type(), rows, 1000 + static_cast<std::uint64_t>(i)); }
    Features query(int i, int rows = 150) const { return noisy_query(item(i, rows), 5000 + static_cast<std::uint64_t>(i)); }

    // Adds items [from, to) with 150 descriptors each.
    void add_items(Index& index, int from, int to) const {
        for (int i = from; i < to; ++i) index.add(item_id(i), item(i));
    }

    // The item is the best candidate and at least `min_true` of its correspondences are its own
    // keypoints; every correspondence it has is a true one.
    void expect_found(const Index& index, int i, std::size_t min_true = 100) const {
        auto cands = index.search(query(i), 5);
        ASSERT_FALSE(cands.empty()) << item_id(i) << " not found";
        EXPECT_EQ(cands.front().id, item_id(i));
        const Candidate* c = find_candidate(cands, item_id(i));
        ASSERT_NE(c, nullptr) << item_id(i) << " is not among the candidates";
        EXPECT_GE(truly(*c), min_true) << item_id(i);
        EXPECT_EQ(truly(*c), c->correspondences.size())
            << item_id(i) << ": a correspondence pairs the wrong keypoints";
        if (GetParam().score_is_votes) EXPECT_EQ(c->score, static_cast<double>(c->correspondences.size()));
        else EXPECT_GT(c->score, 0.0);
    }

    PluginRegistry registry_{std::vector<fs::path>{plugin_dir()}};
    TempDir scratch_{"sightline-index"};
    std::vector<std::unique_ptr<Context>> contexts_;
    const LoadedPlugin* plugin_ = nullptr;
    std::string name_;
};

TEST_P(IndexConformance, AddThenSearchFindsTheItemWithItsGalleryKeypoints) {
    auto index = make();
    add_items(*index, 0, 8);
    for (int i : {0, 3, 7}) expect_found(*index, i, 120);

    // k bounds the candidate list; a single candidate is the best one.
    auto one = index->search(query(3), 1);
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].id, item_id(3));
    EXPECT_TRUE(index->search(query(3), 0).empty());
    // Features of something never added match nothing well enough to pass the ratio test.
    auto stranger = index->search(noisy_query(random_item(type(), 150, 99999), 1), 5);
    for (const auto& c : stranger) EXPECT_LT(c.correspondences.size(), 5u) << c.id;
}

TEST_P(IndexConformance, MatchItemPairsTheQueryWithThatItemAloneOrAnswersNothing) {
    auto index = make();
    add_items(*index, 0, 4);
    const auto matches = index->match_item(item_id(2), query(2));
    if (!index->can_match_item()) {
        EXPECT_TRUE(matches.empty());
        return;
    }
    // Every gallery point is one of item 2's keypoints, and most query points are paired with
    // their own (each sits kQueryOffset from it).
    const Features own = item(2);
    std::size_t paired = 0;
    for (const auto& m : matches) {
        const bool of_item =
            std::any_of(own.keypoints.begin(), own.keypoints.end(),
                        [&](const cv::KeyPoint& k) { return cv::norm(k.pt - m.gallery) < 0.2; });
        EXPECT_TRUE(of_item) << "(" << m.gallery.x << ", " << m.gallery.y
                             << ") is not a keypoint of " << item_id(2);
        if (cv::norm(m.query - m.gallery - kQueryOffset) < 0.3) ++paired;
    }
    EXPECT_GE(paired, 120u);
    EXPECT_TRUE(index->match_item("no-such-item", query(2)).empty());
    ASSERT_TRUE(index->remove(item_id(2)));
    EXPECT_TRUE(index->match_item(item_id(2), query(2)).empty());
}

TEST_P(IndexConformance, EmptyIndexReturnsNothing) {
    auto index = make();
    EXPECT_EQ(index->size(), 0u);
    EXPECT_TRUE(index->search(query(0), 5).empty());
    EXPECT_TRUE(index->search(Features{}, 5).empty());
    index->add(item_id(0), item(0));
    ASSERT_TRUE(index->remove(item_id(0)));
    EXPECT_EQ(index->size(), 0u);
    EXPECT_TRUE(index->search(query(0), 5).empty());
}

TEST_P(IndexConformance, RemoveOfAnUnknownIdReturnsFalse) {
    auto index = make();
    EXPECT_FALSE(index->remove("nothing"));
    add_items(*index, 0, 2);
    EXPECT_FALSE(index->remove("nothing"));
    EXPECT_EQ(index->size(), 2u);
    ASSERT_TRUE(index->remove(item_id(1)));
    EXPECT_FALSE(index->remove(item_id(1)));
    expect_found(*index, 0);
}

TEST_P(IndexConformance, RemovedItemIsNoLongerFound) {
    auto index = make();
    add_items(*index, 0, 6);
    ASSERT_TRUE(index->remove(item_id(2)));
    EXPECT_EQ(index->size(), 5u);
    auto cands = index->search(query(2), 10);
    EXPECT_EQ(find_candidate(cands, item_id(2)), nullptr);
    for (const auto& c : cands) EXPECT_LT(c.correspondences.size(), 5u) << c.id;
    for (int i : {0, 1, 3, 5}) expect_found(*index, i);
}

TEST_P(IndexConformance, ReAddAfterRemoveWorks) {
    auto index = make();
    add_items(*index, 0, 4);
    ASSERT_TRUE(index->remove(item_id(1)));
    index->add(item_id(1), item(1));
    EXPECT_EQ(index->size(), 4u);
    expect_found(*index, 1, 120);
    // Twice more: removal and re-adding do not wear anything out.
    for (int round = 0; round < 2; ++round) {
        ASSERT_TRUE(index->remove(item_id(1)));
        EXPECT_EQ(find_candidate(index->search(query(1), 5), item_id(1)), nullptr);
        index->add(item_id(1), item(1));
    }
    expect_found(*index, 1, 120);
    expect_found(*index, 3);
}

TEST_P(IndexConformance, AddingAnExistingIdReplacesTheItem) {
    auto index = make();
    add_items(*index, 0, 5);
    // item-002 now holds item 42's features.
    index->add(item_id(2), random_item(type(), 150, 1042));
    EXPECT_EQ(index->size(), 5u);
    auto old = index->search(query(2), 10);
    for (const auto& c : old) EXPECT_LT(c.correspondences.size(), 5u) << c.id << " still matches the old features";
    auto now = index->search(noisy_query(random_item(type(), 150, 1042), 77), 5);
    ASSERT_FALSE(now.empty());
    EXPECT_EQ(now.front().id, item_id(2));
    EXPECT_GE(truly(now.front()), 120u);
    // Replacing with the very same features (a re-ingest) keeps the item found.
    index->add(item_id(3), item(3));
    index->add(item_id(3), item(3));
    EXPECT_EQ(index->size(), 5u);
    expect_found(*index, 3, 120);
}

TEST_P(IndexConformance, SizeCountsItems) {
    auto index = make();
    EXPECT_EQ(index->size(), 0u);
    add_items(*index, 0, 3);
    EXPECT_EQ(index->size(), 3u);
    index->add(item_id(1), item(10));
    EXPECT_EQ(index->size(), 3u);
    index->add("no-features", Features{});
    EXPECT_EQ(index->size(), 4u);
    ASSERT_TRUE(index->remove("no-features"));
    ASSERT_TRUE(index->remove(item_id(0)));
    EXPECT_EQ(index->size(), 2u);
}

TEST_P(IndexConformance, SaveThenLoadIntoAFreshInstanceGivesIdenticalResults) {
    auto index = make();
    add_items(*index, 0, 8);
    ASSERT_TRUE(index->remove(item_id(5)));
    index->add(item_id(6), item(60));
    std::stringstream snapshot;
    index->save(snapshot);

    auto fresh = make();
    fresh->add("to-be-replaced", item(70));
    fresh->load(snapshot);
    EXPECT_EQ(fresh->size(), index->size());
    EXPECT_EQ(find_candidate(fresh->search(query(70), 5), "to-be-replaced"), nullptr);
    for (int i : {0, 3, 5, 6, 60, 7}) {
        const Features q = query(i);
        auto a = index->search(q, 5);
        auto b = fresh->search(q, 5);
        ASSERT_EQ(a.size(), b.size()) << "query " << i;
        for (std::size_t c = 0; c < a.size(); ++c) {
            EXPECT_EQ(a[c].id, b[c].id);
            EXPECT_EQ(a[c].score, b[c].score);
            ASSERT_EQ(a[c].correspondences.size(), b[c].correspondences.size());
            for (std::size_t m = 0; m < a[c].correspondences.size(); ++m) {
                EXPECT_EQ(a[c].correspondences[m].query, b[c].correspondences[m].query);
                EXPECT_EQ(a[c].correspondences[m].gallery, b[c].correspondences[m].gallery);
                EXPECT_EQ(a[c].correspondences[m].distance, b[c].correspondences[m].distance);
            }
        }
    }
    expect_found(*fresh, 3, 120);
    EXPECT_EQ(find_candidate(fresh->search(query(5), 5), item_id(5)), nullptr);
    // The loaded index keeps working: add, remove.
    fresh->add(item_id(20), item(20));
    expect_found(*fresh, 20, 120);
    EXPECT_TRUE(fresh->remove(item_id(0)));
    EXPECT_EQ(fresh->size(), 7u);

    // An empty index round-trips too.
    std::stringstream empty_snapshot;
    make()->save(empty_snapshot);
    auto from_empty = make();
    from_empty->load(empty_snapshot);
    EXPECT_EQ(from_empty->size(), 0u);
    EXPECT_TRUE(from_empty->search(query(0), 5).empty());
}

TEST_P(IndexConformance, LoadingGarbageThrowsAndKeepsTheContents) {
    auto index = make();
    add_items(*index, 0, 2);
    std::stringstream good;
    index->save(good);
    const std::string bytes = good.str();

    cv::RNG rng(7);
    std::string garbage(4096, '\0');
    for (auto& ch : garbage) ch = static_cast<char>(rng.uniform(0, 256));
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"garbage", garbage},
        {"empty", ""},
        {"truncated", bytes.substr(0, bytes.size() / 2)},
        {"header only", bytes.substr(0, 8)},
    };
    auto target = make();
    target->add(item_id(9), item(9));
    for (const auto& [what, b] : bad) {
        std::stringstream in(b);
        Error e = capture_error([&] { target->load(in); });
        EXPECT_NE(std::string(e.what()), "") << what;
        EXPECT_EQ(target->size(), 1u) << what << ": a failed load changed the index";
    }
    expect_found(*target, 9, 120);
}

TEST_P(IndexConformance, ConcurrentSearchesWhileAddingAlwaysFindAStableItem) {
    // Small items keep it fast on a busy machine (an HNSW insert costs far more than a search).
    auto index = make();
    index->add("stable", item(0, 60));
    const Features q = query(0, 60);
    std::atomic<bool> writing{true};
    std::atomic<int> searches{0}, misses{0}, errors{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 4; ++t)
        readers.emplace_back([&] {
            // Search while the writer runs, and at least a few times each.
            for (int n = 0; writing.load() || n < 3; ++n) {
                try {
                    auto cands = index->search(q, 3);
                    const Candidate* c = find_candidate(cands, "stable");
                    if (!c || truly(*c) < 40) ++misses;
                } catch (...) {
                    ++errors;
                }
                ++searches;
            }
        });
    std::thread writer([&] {
        try {
            for (int i = 1; i <= 100; ++i) index->add(item_id(i), item(i, 10));
        } catch (...) {
            ++errors;
        }
        writing = false;
    });
    writer.join();
    for (auto& r : readers) r.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(misses.load(), 0) << "of " << searches.load() << " searches";
    EXPECT_GE(searches.load(), 12);
    EXPECT_EQ(index->size(), 101u);
    auto last = index->search(noisy_query(item(100, 10), 1), 3);
    ASSERT_FALSE(last.empty());
    EXPECT_EQ(last.front().id, item_id(100));
}

TEST_P(IndexConformance, WrongDescriptorTypeThrows) {
    auto index = make();
    add_items(*index, 0, 2);
    Features wrong = item(5);
    wrong.descriptors.convertTo(wrong.descriptors, CV_64F);
    Error e = capture_error([&] { index->add("wrong", wrong); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_EQ(index->size(), 2u);
    EXPECT_FALSE(index->remove("wrong"));
    Error s = capture_error([&] { (void)index->search(wrong, 5); });
    EXPECT_EQ(s.code(), ErrorCode::invalid_argument);
    Features shorts = item(5);
    shorts.descriptors.convertTo(shorts.descriptors, CV_16S);
    EXPECT_EQ(capture_error([&] { index->add("shorts", shorts); }).code(), ErrorCode::invalid_argument);
    expect_found(*index, 1);
}

// Issue 22: an index must not trust that keypoints and descriptor rows correspond (a correspondence
// is read from keypoints[row]), nor mix descriptor layouts. Both are refused, naming both sides.
TEST_P(IndexConformance, KeypointsAndDescriptorRowsMustAgree) {
    auto index = make();
    add_items(*index, 0, 2);
    Features fewer = item(5);
    fewer.keypoints.pop_back();
    Error e = capture_error([&] { index->add("fewer", fewer); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("149")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("150")) << e.what();
    Features more = item(6);
    more.keypoints.push_back(more.keypoints.front());
    e = capture_error([&] { index->add("more", more); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("151")) << e.what();
    EXPECT_EQ(index->size(), 2u);
    EXPECT_FALSE(index->remove("fewer"));
    EXPECT_FALSE(index->remove("more"));

    Features q = query(1);
    q.keypoints.pop_back();
    e = capture_error([&] { (void)index->search(q, 5); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("149")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("150")) << e.what();
    expect_found(*index, 1);
}

TEST_P(IndexConformance, DescriptorsOfAnotherTypeOrWidthAreRefused) {
    auto index = make();
    add_items(*index, 0, 2);
    const int other = type() == CV_8U ? CV_32F : CV_8U;
    const Features foreign = random_item(other, 150, 77);
    Error e = capture_error([&] { index->add("foreign", foreign); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("CV_8U")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("CV_32F")) << e.what();

    const int width = item(7).descriptors.cols;
    const auto narrowed = [&](Features f) {
        f.descriptors = f.descriptors.colRange(0, width / 2).clone();
        return f;
    };
    e = capture_error([&] { index->add("narrow", narrowed(item(7))); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(width))) << e.what();
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(width / 2))) << e.what();
    EXPECT_EQ(index->size(), 2u);
    EXPECT_FALSE(index->remove("foreign"));
    EXPECT_FALSE(index->remove("narrow"));

    e = capture_error([&] { (void)index->search(noisy_query(foreign, 1), 5); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("CV_8U")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("CV_32F")) << e.what();
    e = capture_error([&] { (void)index->search(narrowed(query(1)), 5); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(width))) << e.what();
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(width / 2))) << e.what();
    expect_found(*index, 1);
}

INSTANTIATE_TEST_SUITE_P(Indexes, IndexConformance, ::testing::ValuesIn(kIndexCases),
                         [](const ::testing::TestParamInfo<IndexCase>& info) { return info.param.name; });

// ---- index-faiss's own behaviour -------------------------------------------------------------

class IndexFaiss : public ::testing::Test {
protected:
    void SetUp() override {
        registry_.load_all();
        plugin_ = registry_.find(PluginKind::index, "faiss");
        if (!plugin_) GTEST_SKIP() << "index-faiss is not built in " << plugin_dir();
    }
    std::shared_ptr<Index> make(const std::string& yaml) {
        std::vector<std::string> errors;
        validate_section(YAML::Load(yaml), plugin_->schema(), "faiss.yaml", "pipelines.p.index", {"type"}, errors);
        EXPECT_TRUE(errors.empty()) << ::testing::PrintToString(errors);
        contexts_.push_back(std::make_unique<MinimalContext>(
            Config(YAML::Load(yaml), "faiss.yaml", "pipelines.p.index", plugin_->schema()), "index-faiss"));
        return registry_.create<PluginKind::index>(*plugin_, *contexts_.back());
    }
    std::string errors_for(const std::string& yaml) {
        std::vector<std::string> errors;
        validate_section(YAML::Load(yaml), plugin_->schema(), "faiss.yaml", "pipelines.p.index", {"type"}, errors);
        std::string all;
        for (const auto& e : errors) all += e + "\n";
        return all;
    }
    static std::size_t snapshot_size(const Index& index) {
        std::stringstream s;
        index.save(s);
        return s.str().size();
    }

    PluginRegistry registry_{std::vector<fs::path>{plugin_dir()}};
    std::vector<std::unique_ptr<Context>> contexts_;
    const LoadedPlugin* plugin_ = nullptr;
};

TEST_F(IndexFaiss, OneIndexHoldsOneDescriptorTypeAndWidth) {
    for (const char* method : {"hnsw", "flat"}) {
        SCOPED_TRACE(method);
        auto index = make(std::string("{type: faiss, method: ") + method + "}");
        index->add("orb", random_item(CV_8U, 50, 1));
        Error e = capture_error([&] { index->add("surf", random_item(CV_32F, 50, 2)); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        EXPECT_THAT(e.what(), HasSubstr("binary descriptors of 32 bytes"));
        EXPECT_THAT(e.what(), HasSubstr("float descriptors of 64 values"));
        Features wide = random_item(CV_8U, 50, 3);
        cv::Mat doubled;
        cv::hconcat(wide.descriptors, wide.descriptors, doubled);  // 64 bytes
        wide.descriptors = doubled;
        EXPECT_THAT(capture_error([&] { index->add("wide", wide); }).what(), HasSubstr("64 bytes"));
        EXPECT_EQ(index->size(), 1u);
        // A query of the other kind is refused with both layouts named.
        Error q = capture_error([&] { (void)index->search(noisy_query(random_item(CV_32F, 20, 2), 1), 3); });
        EXPECT_EQ(q.code(), ErrorCode::invalid_argument);
        EXPECT_THAT(q.what(), HasSubstr("same features plugin"));
        // Replacing the only item, or emptying the index, frees it for another layout.
        index->add("orb", random_item(CV_32F, 50, 2));
        EXPECT_EQ(index->size(), 1u);
        auto found = index->search(noisy_query(random_item(CV_32F, 50, 2), 1), 3);
        ASSERT_FALSE(found.empty());
        EXPECT_EQ(found.front().id, "orb");
        ASSERT_TRUE(index->remove("orb"));
        index->add("again", random_item(CV_8U, 50, 4));
        EXPECT_EQ(index->size(), 1u);
    }
}

TEST_F(IndexFaiss, KeypointsAndDescriptorRowsMustAgree) {
    auto index = make("{type: faiss}");
    Features f = random_item(CV_8U, 30, 1);
    f.keypoints.pop_back();
    Error e = capture_error([&] { index->add("x", f); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("29 keypoints but 30 descriptor rows"));
    EXPECT_EQ(index->size(), 0u);
}

TEST_F(IndexFaiss, HnswRebuildsOnceTombstonesExceedTheShare) {
    auto index = make("{type: faiss, method: hnsw, rebuild_share: 0.25}");
    for (int i = 0; i < 10; ++i) index->add(item_id(i), random_item(CV_8U, 100, 1000 + i));
    const std::size_t full = snapshot_size(*index);
    // 2 of 10 items removed: 20% tombstones, kept (their vectors stay in the snapshot).
    ASSERT_TRUE(index->remove(item_id(0)));
    ASSERT_TRUE(index->remove(item_id(1)));
    const std::size_t with_tombstones = snapshot_size(*index);
    EXPECT_GT(with_tombstones, full * 9 / 10);
    EXPECT_EQ(find_candidate(index->search(noisy_query(random_item(CV_8U, 100, 1000), 1), 5), item_id(0)), nullptr);
    // A third: 30% > 25%, so the graph is rebuilt from the 7 live items.
    ASSERT_TRUE(index->remove(item_id(2)));
    const std::size_t rebuilt = snapshot_size(*index);
    EXPECT_LT(rebuilt, full * 8 / 10);
    EXPECT_EQ(index->size(), 7u);
    for (int i = 3; i < 10; ++i) {
        auto c = index->search(noisy_query(random_item(CV_8U, 100, 1000 + i), 1), 3);
        ASSERT_FALSE(c.empty());
        EXPECT_EQ(c.front().id, item_id(i));
        EXPECT_GE(true_correspondences(c.front(), CV_8U), 80u);
    }
    // Replacing an item many times with identical features (tombstones that sit exactly where
    // the live copy is) never hides it.
    for (int r = 0; r < 6; ++r) {
        index->add(item_id(5), random_item(CV_8U, 100, 1005));
        auto c = index->search(noisy_query(random_item(CV_8U, 100, 1005), 1), 3);
        ASSERT_FALSE(c.empty());
        EXPECT_EQ(c.front().id, item_id(5));
        EXPECT_GE(true_correspondences(c.front(), CV_8U), 80u) << "round " << r;
    }
}

TEST_F(IndexFaiss, DamagedSnapshotIsRefusedByItsChecksum) {
    auto index = make("{type: faiss, method: hnsw}");
    for (int i = 0; i < 3; ++i) index->add(item_id(i), random_item(CV_32F, 60, 1000 + i));
    std::stringstream s;
    index->save(s);
    std::string bytes = s.str();
    bytes[bytes.size() / 2] ^= 0x10;
    std::stringstream in(bytes);
    auto target = make("{type: faiss, method: hnsw}");
    Error e = capture_error([&] { target->load(in); });
    EXPECT_EQ(e.code(), ErrorCode::data_loss);
    EXPECT_THAT(e.what(), HasSubstr("checksum"));
    std::stringstream bruteforce_like("SLBF\x01\0\0\0");
    EXPECT_THAT(capture_error([&] { target->load(bruteforce_like); }).what(), HasSubstr("bad magic"));
    EXPECT_EQ(target->size(), 0u);
}

TEST_F(IndexFaiss, SnapshotOfOneMethodLoadsIntoTheOther) {
    auto flat = make("{type: faiss, method: flat}");
    for (int i = 0; i < 4; ++i) flat->add(item_id(i), random_item(CV_8U, 80, 1000 + i));
    std::stringstream s;
    flat->save(s);
    auto hnsw = make("{type: faiss, method: hnsw}");
    hnsw->load(s);
    EXPECT_EQ(hnsw->size(), 4u);
    auto c = hnsw->search(noisy_query(random_item(CV_8U, 80, 1002), 1), 3);
    ASSERT_FALSE(c.empty());
    EXPECT_EQ(c.front().id, item_id(2));
    EXPECT_GE(true_correspondences(c.front(), CV_8U), 60u);
}

TEST_F(IndexFaiss, ConfigSchemaBoundsAndChoices) {
    EXPECT_EQ(errors_for("{type: faiss, method: hnsw, m: 16, ef_search: 32, ef_construction: 40, ratio: 0.7}"), "");
    EXPECT_THAT(errors_for("{type: faiss, method: ivf}"), HasSubstr("method"));
    EXPECT_THAT(errors_for("{type: faiss, m: 2}"), HasSubstr("pipelines.p.index.m"));
    EXPECT_THAT(errors_for("{type: faiss, ef_search: 0}"), HasSubstr("ef_search"));
    EXPECT_THAT(errors_for("{type: faiss, ef_construction: 100000}"), HasSubstr("ef_construction"));
    EXPECT_THAT(errors_for("{type: faiss, rebuild_share: 0}"), HasSubstr("rebuild_share"));
    EXPECT_THAT(errors_for("{type: faiss, omp_threads: -1}"), HasSubstr("omp_threads"));
    EXPECT_THAT(errors_for("{type: faiss, ef_serach: 10}"), HasSubstr("ef_search"));  // did you mean
    for (const auto& key : plugin_->schema()) EXPECT_STRNE(key.description, "") << key.name;
}

// ---- index-vocab's own behaviour -------------------------------------------------------------

class IndexVocab : public ::testing::Test {
protected:
    void SetUp() override {
        registry_.load_all();
        plugin_ = registry_.find(PluginKind::index, "vocab");
        ASSERT_NE(plugin_, nullptr) << "index-vocab is not built in " << plugin_dir();
    }
    std::shared_ptr<Index> make(const std::string& yaml) {
        Config config(YAML::Load(yaml), "vocab.yaml", "pipelines.p.index", plugin_->schema());
        contexts_.push_back(vocab_setup(IndexSetup{config, registry_, scratch_.path(), CV_32F,
                                                   [](int rows, std::uint64_t seed) {
                                                       return random_descriptors(CV_32F, rows, seed);
                                                   }}));
        return registry_.create<PluginKind::index>(*plugin_, *contexts_.back());
    }

    PluginRegistry registry_{std::vector<fs::path>{plugin_dir()}};
    TempDir scratch_{"sightline-index-vocab"};
    std::vector<std::unique_ptr<Context>> contexts_;
    const LoadedPlugin* plugin_ = nullptr;
};

// Two items share the query's descriptors: "turned" holds 60 of them as a photo turned by 30°,
// zoomed 2x and shifted would show them (every keypoint moved, turned and scaled alike),
// "scrambled" all 100 with random angles and sizes, as a chance item whose features look alike but
// lie any which way.
// By tf-idf alone "scrambled" ranks first (more word matches, and "turned" carries 30 unrelated
// features); weak geometric consistency puts "turned" first.
TEST_F(IndexVocab, GeometryRerankPrefersTheItemWhoseMatchesAgreeOnOneSimilarity) {
    const Features query_src = random_item(CV_32F, 100, 4242);
    cv::RNG rng(7);
    Features query = noisy_query(query_src, 9);
    for (auto& k : query.keypoints) {
        k.angle = rng.uniform(0.f, 360.f);
        k.size = rng.uniform(4.f, 60.f);
    }
    // query = 2·R(30°)·item + (100, 50): each item keypoint where that similarity's inverse puts
    // its query keypoint, turned and scaled alike.
    Features turned;
    turned.descriptors = query_src.descriptors.rowRange(0, 60).clone();
    const double c = std::cos(-CV_PI / 6), s = std::sin(-CV_PI / 6);
    for (int r = 0; r < 60; ++r) {
        const cv::KeyPoint& q = query.keypoints[static_cast<std::size_t>(r)];
        const double x = (q.pt.x - 100) / 2, y = (q.pt.y - 50) / 2;
        turned.keypoints.emplace_back(cv::Point2f(static_cast<float>(c * x - s * y), static_cast<float>(s * x + c * y)),
                                      q.size / 2.f, std::fmod(q.angle + 330.f, 360.f));
    }
    const Features other = random_item(CV_32F, 30, 777);
    cv::vconcat(turned.descriptors, other.descriptors, turned.descriptors);
    for (const auto& k : other.keypoints) turned.keypoints.emplace_back(k.pt, 10.f, rng.uniform(0.f, 360.f));
    Features scrambled = query_src;
    for (auto& k : scrambled.keypoints) {
        k.angle = rng.uniform(0.f, 360.f);
        k.size = rng.uniform(4.f, 60.f);
    }
    // 80 of the descriptors turned and scaled as in "turned" but lying anywhere: the rotation and
    // scale agree, the positions do not.
    Features misplaced;
    misplaced.descriptors = query_src.descriptors.rowRange(0, 80).clone();
    for (int r = 0; r < 80; ++r) {
        const cv::KeyPoint& q = query.keypoints[static_cast<std::size_t>(r)];
        misplaced.keypoints.emplace_back(cv::Point2f(rng.uniform(0.f, 400.f), rng.uniform(0.f, 300.f)), q.size / 2.f,
                                         std::fmod(q.angle + 330.f, 360.f));
    }

    const auto ranking = [&](const std::string& yaml) {
        auto index = make(yaml);
        index->add("scrambled", scrambled);
        index->add("misplaced", misplaced);
        index->add("turned", turned);
        const auto c = index->search(query, 3);
        EXPECT_EQ(c.size(), 3u);
        std::string order;
        for (const auto& x : c) order += x.id + " ";
        return order;
    };
    EXPECT_EQ(ranking("{type: vocab, vocabulary: test.voc, hamming_threshold: 3, geometry_rerank: 0}"),
              "scrambled misplaced turned ");
    EXPECT_EQ(ranking("{type: vocab, vocabulary: test.voc, hamming_threshold: 3}").substr(0, 7), "turned ");
}

// A repeated texture (a brick wall, a star field) gives a photo many features that look alike, and
// they all meet the one gallery keypoint of that look: 60 query features on one keypoint of
// "bursty", whose matches then agree on position too (they sit in one small patch). Counted once
// per query feature they would outvote "true", whose 40 matches are 40 different keypoints; the
// re-ranking counts a gallery keypoint once (Jégou, Douze and Schmid's burstiness, CVPR 2009).
TEST_F(IndexVocab, GeometryRerankCountsAGalleryKeypointOnce) {
    const Features source = random_item(CV_32F, 100, 5151);
    Features query = noisy_query(source, 17);
    const cv::Mat texture = random_descriptors(CV_32F, 1, 999);
    for (int i = 0; i < 60; ++i) {
        query.descriptors.push_back(texture);
        query.keypoints.emplace_back(cv::Point2f(300.f + static_cast<float>(i % 8), 200.f + static_cast<float>(i / 8)), 8.f);
    }
    Features truth;
    truth.descriptors = source.descriptors.rowRange(0, 40).clone();
    truth.keypoints.assign(source.keypoints.begin(), source.keypoints.begin() + 40);
    const Features filler = random_item(CV_32F, 30, 4040);
    truth.descriptors.push_back(filler.descriptors);
    truth.keypoints.insert(truth.keypoints.end(), filler.keypoints.begin(), filler.keypoints.end());
    Features bursty = random_item(CV_32F, 4, 6060);
    bursty.descriptors.push_back(texture);
    bursty.keypoints.emplace_back(cv::Point2f(50.f, 50.f), 8.f);

    auto index = make("{type: vocab, vocabulary: test.voc, hamming_threshold: 3}");
    index->add("bursty", bursty);
    index->add("true", truth);
    const auto c = index->search(query, 2);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(c[0].id, "true");
    EXPECT_EQ(c[1].id, "bursty");
}

// geometry_norm: 1 divides the agreeing weight by the item's whole tf-idf norm, so a small item with
// a few agreeing matches beats a large one with many more; 0 ranks by the agreeing weight alone.
TEST_F(IndexVocab, GeometryNormSetsHowMuchAnItemsSizeCounts) {
    const Features source = random_item(CV_32F, 100, 8080);
    const Features query = noisy_query(source, 23);
    const auto part = [&](int from, int to, int filler, std::uint64_t seed) {
        Features f;
        f.descriptors = source.descriptors.rowRange(from, to).clone();
        f.keypoints.assign(source.keypoints.begin() + from, source.keypoints.begin() + to);
        if (filler > 0) {
            const Features other = random_item(CV_32F, filler, seed);
            f.descriptors.push_back(other.descriptors);
            f.keypoints.insert(f.keypoints.end(), other.keypoints.begin(), other.keypoints.end());
        }
        return f;
    };
    const auto first = [&](const std::string& norm) {
        auto index = make("{type: vocab, vocabulary: test.voc, hamming_threshold: 3, geometry_norm: " + norm + "}");
        index->add("large", part(0, 60, 300, 9090));
        index->add("small", part(60, 72, 0, 0));
        const auto c = index->search(query, 2);
        EXPECT_EQ(c.size(), 2u);
        return c.empty() ? std::string() : c.front().id;
    };
    EXPECT_EQ(first("1"), "small");
    EXPECT_EQ(first("0"), "large");
}

// match_item_threshold: match_item (the second look) keeps only word matches within that many
// signature bits; 64 keeps every word match, chance ones included.
TEST_F(IndexVocab, MatchItemThresholdDropsChanceWordMatches) {
    const Features item = random_item(CV_32F, 50, 3030);
    Features query = noisy_query(item, 5);
    const Features unrelated = random_item(CV_32F, 50, 3131);
    query.descriptors.push_back(unrelated.descriptors);
    query.keypoints.insert(query.keypoints.end(), unrelated.keypoints.begin(), unrelated.keypoints.end());
    auto all = make("{type: vocab, vocabulary: test.voc, hamming_threshold: 3}");
    auto strict = make("{type: vocab, vocabulary: test.voc, hamming_threshold: 3, match_item_threshold: 3}");
    all->add("x", item);
    strict->add("x", item);
    const auto loose = all->match_item("x", query);
    const auto kept = strict->match_item("x", query);
    EXPECT_GT(loose.size(), 100u * 50u / 4u);  // each of 100 query features meets about half the 50 postings, in 2 words
    ASSERT_GE(kept.size(), 45u);  // the noisy copies meet their originals (noise flips a bit near a cut now and then)
    EXPECT_LT(kept.size(), 60u);
    for (const auto& m : kept) EXPECT_LE(m.distance, 3.0f);
    std::vector<std::string> errors;
    validate_section(YAML::Load("{type: vocab, vocabulary: test.voc, match_item_threshold: 65, geometry_norm: 2}"),
                     plugin_->schema(), "vocab.yaml", "pipelines.p.index", {"type"}, errors);
    ASSERT_EQ(errors.size(), 2u);
    EXPECT_THAT(errors[0] + errors[1], HasSubstr("match_item_threshold"));
    EXPECT_THAT(errors[0] + errors[1], HasSubstr("geometry_norm"));
}

// A large query is scanned in chunks on OpenCV's threads; the answer must not depend on how many.
TEST_F(IndexVocab, ChunkedScanAnswersAsOneThreadDoes) {
    auto index = make("{type: vocab, vocabulary: test.voc, hamming_threshold: 3}");
    for (int i = 0; i < 6; ++i) index->add(item_id(i), random_item(CV_32F, 400, 1000 + static_cast<std::uint64_t>(i)));
    Features query = noisy_query(random_item(CV_32F, 400, 1002), 3);
    const Features other = noisy_query(random_item(CV_32F, 400, 1004), 4);
    cv::vconcat(query.descriptors, other.descriptors, query.descriptors);  // 800 rows: chunked
    query.keypoints.insert(query.keypoints.end(), other.keypoints.begin(), other.keypoints.end());
    const int threads = cv::getNumThreads();
    cv::setNumThreads(1);
    const auto one = index->search(query, 4);
    cv::setNumThreads(4);
    const auto four = index->search(query, 4);
    cv::setNumThreads(threads);
    ASSERT_EQ(one.size(), four.size());
    ASSERT_GE(one.size(), 2u);
    EXPECT_EQ(one[0].id, item_id(2));
    EXPECT_EQ(one[1].id, item_id(4));
    for (std::size_t i = 0; i < one.size(); ++i) {
        EXPECT_EQ(one[i].id, four[i].id);
        EXPECT_EQ(one[i].score, four[i].score);  // hits are summed in one order whatever the threads
        EXPECT_EQ(one[i].correspondences.size(), four[i].correspondences.size()) << one[i].id;
    }
}

// A word's list is scanned a chunk of 2,048 postings at a time. An item's answer depends on its own
// postings alone, so in a list of 30 items' postings, 3,000 in all (one descriptor with noise,
// one word), each item is answered as in an index that holds only it: item 20's postings straddle
// the first chunk's end, and 40 query features look the word up at once.
TEST_F(IndexVocab, ListsLongerThanAChunkAnswerAsShortOnes) {
    const Features base = random_item(CV_32F, 1, 4444);
    const auto copies = [&](int rows, std::uint64_t seed) {
        Features f;
        cv::RNG rng(seed);
        for (int r = 0; r < rows; ++r) {
            Features one = noisy_query(base, seed * 1000 + static_cast<std::uint64_t>(r));
            f.descriptors.push_back(one.descriptors);
            f.keypoints.emplace_back(cv::Point2f(rng.uniform(0.f, 400.f), rng.uniform(0.f, 300.f)),
                                     10.f, rng.uniform(0.f, 360.f));
        }
        return f;
    };
    const std::string yaml = "{type: vocab, vocabulary: test.voc, hamming_threshold: 64}";
    auto all = make(yaml);
    std::vector<Features> items;
    for (int i = 0; i < 30; ++i) {
        items.push_back(copies(100, 50 + static_cast<std::uint64_t>(i)));
        all->add(item_id(i), items.back());
    }
    const Features query = copies(40, 7);
    const auto together = all->search(query, 30);
    ASSERT_EQ(together.size(), 30u);
    for (const int i : {0, 19, 20, 21, 29}) {
        auto alone = make(yaml);
        alone->add(item_id(i), items[static_cast<std::size_t>(i)]);
        const auto own = alone->search(query, 1);
        ASSERT_EQ(own.size(), 1u);
        const auto it = std::find_if(together.begin(), together.end(),
                                     [&](const auto& c) { return c.id == item_id(i); });
        ASSERT_NE(it, together.end()) << item_id(i);
        EXPECT_EQ(it->score, own[0].score) << item_id(i);
        ASSERT_EQ(it->correspondences.size(), own[0].correspondences.size()) << item_id(i);
        EXPECT_GE(own[0].correspondences.size(), 10u) << item_id(i);
        for (std::size_t k = 0; k < own[0].correspondences.size(); ++k) {
            EXPECT_EQ(it->correspondences[k].query, own[0].correspondences[k].query)
                << item_id(i) << " " << k;
            EXPECT_EQ(it->correspondences[k].gallery, own[0].correspondences[k].gallery)
                << item_id(i) << " " << k;
        }
    }
}

// A word's list is read once for every query feature that looks it up: a query
// whose every feature appears 40 times (each word looked up by dozens of features at once) finds
// what the query itself finds, with the same correspondences, and a score 40 times smaller: a
// gallery keypoint counts once, so the agreeing weight stays, and the query's norm is 40 times
// larger.
TEST_F(IndexVocab, AWordLookedUpByManyFeaturesScoresAsLookedUpOnce) {
    auto index = make("{type: vocab, vocabulary: test.voc, hamming_threshold: 3}");
    for (int i = 0; i < 5; ++i) index->add(item_id(i), random_item(CV_32F, 120, 3000 + static_cast<std::uint64_t>(i)));
    const Features once = noisy_query(random_item(CV_32F, 120, 3002), 6);
    Features many;
    for (int copy = 0; copy < 40; ++copy) {
        many.descriptors.push_back(once.descriptors);
        many.keypoints.insert(many.keypoints.end(), once.keypoints.begin(), once.keypoints.end());
    }
    const auto a = index->search(once, 3), b = index->search(many, 3);
    ASSERT_FALSE(a.empty());
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(a[0].id, item_id(2));
    for (std::size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].id, b[i].id);
        EXPECT_NEAR(a[i].score, 40.0f * b[i].score, 1e-4 * std::abs(a[i].score));
        EXPECT_EQ(a[i].correspondences.size(), b[i].correspondences.size()) << a[i].id;
    }
    EXPECT_GE(a[0].correspondences.size(), 100u);
}

}  // namespace
