// storage-local, created through the real plugin: round trips, the key rule, atomic puts under
// concurrent readers, symlinks out of the root, no temp files ever visible.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>

#include <atomic>
#include <chrono>
#include <sstream>
#include <thread>

#include "sightline/host/host.hpp"
#include "sightline/host/metrics_registry.hpp"
#include "sightline/host/plugin_registry.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

class LocalStorageTest : public ::testing::Test {
protected:
    void SetUp() override {
        registry_ = std::make_unique<PluginRegistry>(std::vector<fs::path>{plugin_dir()});
        registry_->load_all();
        storage_ = make_storage(dir_ / "root", false);
        root_ = fs::canonical(dir_ / "root");
    }

    std::shared_ptr<Storage> make_storage(const fs::path& root, bool fsync) {
        const LoadedPlugin& plugin = registry_->get(PluginKind::storage, "local");
        YAML::Node node(YAML::NodeType::Map);
        node["type"] = "local";
        node["root"] = root.string();
        node["fsync"] = fsync ? "true" : "false";
        MinimalContext ctx(Config(node, "test.yaml", "storages.test", plugin.schema()));
        return registry_->create<PluginKind::storage>(plugin, ctx);
    }

    // Every file under the root, as paths relative to it (including anything list() hides).
    std::vector<std::string> files_on_disk() const {
        std::vector<std::string> out;
        for (const auto& e : fs::recursive_directory_iterator(root_))
            if (!e.is_directory()) out.push_back(fs::relative(e.path(), root_).generic_string());
        std::sort(out.begin(), out.end());
        return out;
    }

    TempDir dir_{"sightline-storage"};
    std::unique_ptr<PluginRegistry> registry_;
    std::shared_ptr<Storage> storage_;
    fs::path root_;
};

TEST_F(LocalStorageTest, RoundTrip) {
    Storage& s = *storage_;
    EXPECT_FALSE(s.exists("images/a.jpg"));
    EXPECT_FALSE(s.get("images/a.jpg").has_value());

    Bytes a = to_bytes("hello"), b(100000);
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i * 31 + 7);
    s.put("images/a.jpg", a);
    s.put("images/sub/b.bin", b);
    s.put("features/x/c.rec", to_bytes(""));
    s.put("top", to_bytes("t"));

    EXPECT_TRUE(s.exists("images/a.jpg"));
    EXPECT_EQ(s.get("images/a.jpg"), a);
    EXPECT_EQ(s.get("images/sub/b.bin"), b);
    ASSERT_TRUE(s.get("features/x/c.rec").has_value());
    EXPECT_TRUE(s.get("features/x/c.rec")->empty());
    // A directory is not an object.
    EXPECT_FALSE(s.exists("images/sub"));
    EXPECT_FALSE(s.get("images/sub").has_value());

    EXPECT_EQ(s.list(""), (std::vector<std::string>{"features/x/c.rec", "images/a.jpg", "images/sub/b.bin", "top"}));
    EXPECT_EQ(s.list("images/"), (std::vector<std::string>{"images/a.jpg", "images/sub/b.bin"}));
    EXPECT_EQ(s.list("images/s"), (std::vector<std::string>{"images/sub/b.bin"}));
    EXPECT_EQ(s.list("im"), (std::vector<std::string>{"images/a.jpg", "images/sub/b.bin"}));
    EXPECT_TRUE(s.list("nothing/").empty());

    // Overwrite replaces.
    s.put("images/a.jpg", to_bytes("second"));
    EXPECT_EQ(s.get("images/a.jpg"), to_bytes("second"));

    EXPECT_TRUE(s.remove("images/a.jpg"));
    EXPECT_FALSE(s.remove("images/a.jpg"));
    EXPECT_FALSE(s.exists("images/a.jpg"));
    EXPECT_FALSE(s.get("images/a.jpg").has_value());
    EXPECT_EQ(s.list("images/"), (std::vector<std::string>{"images/sub/b.bin"}));

    // The objects are plain files under the root.
    EXPECT_EQ(read_bytes(root_ / "images/sub/b.bin"), b);
}

TEST_F(LocalStorageTest, DataSurvivesANewInstance) {
    storage_->put("k/v", to_bytes("persisted"));
    auto again = make_storage(dir_ / "root", true);
    EXPECT_EQ(again->get("k/v"), to_bytes("persisted"));
}

// The gallery keeps an item's images in a directory of their own: removing an item's last object
// must not leave the directory behind (a gallery with many removed items would fill with them),
// and a put racing such a removal into the same directory still succeeds.
TEST_F(LocalStorageTest, RemovingTheLastObjectOfADirectoryRemovesTheDirectory) {
    storage_->put("images/item/a.jpg", to_bytes("a"));
    storage_->put("images/item/b.jpg", to_bytes("b"));
    storage_->put("images/other.item", to_bytes("o"));
    EXPECT_TRUE(storage_->remove("images/item/a.jpg"));
    EXPECT_TRUE(fs::is_directory(root_ / "images" / "item"));
    EXPECT_TRUE(storage_->remove("images/item/b.jpg"));
    EXPECT_FALSE(fs::exists(root_ / "images" / "item"));
    EXPECT_TRUE(fs::is_directory(root_ / "images")) << "a directory that still holds objects was removed";
    EXPECT_TRUE(storage_->remove("images/other.item"));
    EXPECT_FALSE(fs::exists(root_ / "images"));
    EXPECT_TRUE(fs::is_directory(root_)) << "the root itself was removed";

    std::atomic<bool> stop{false};
    std::thread remover([&] {
        while (!stop) {
            storage_->put("race/x/one", to_bytes("1"));
            storage_->remove("race/x/one");
        }
    });
    for (int i = 0; i < 2000 && !HasFailure(); ++i) {
        const std::string key = "race/x/k" + std::to_string(i % 7);
        EXPECT_NO_THROW(storage_->put(key, to_bytes("v"))) << key;
        EXPECT_NO_THROW(storage_->remove(key));
    }
    stop = true;
    remover.join();
}

TEST_F(LocalStorageTest, InvalidKeysAreRefusedWithTheReason) {
    struct Case {
        std::string key, reason;
    };
    const std::vector<Case> cases{
        {"../x", "'..' segment"},
        {"a/../b", "'..' segment"},
        {"./a", "'.' segment"},
        {"/abs", "starts with '/'"},
        {"", "empty"},
        {std::string("a\0b", 3), "NUL byte"},
        {std::string(5000, 'k'), "5000 bytes long"},
        {"a//b", "empty path segment"},
        {"a/", "empty path segment"},
        {"sp ace", "character 0x20"},
        {"back\\slash", "character 0x5c"},
        {"uml\xc3\xa4ut", "character 0xc3"},
    };
    const Bytes data = to_bytes("x");
    for (const auto& c : cases) {
        SCOPED_TRACE("key '" + c.key.substr(0, 40) + "'");
        for (const char* op : {"put", "get", "exists", "remove"}) {
            Error e = capture_error([&] {
                if (op == std::string("put")) storage_->put(c.key, data);
                if (op == std::string("get")) (void)storage_->get(c.key);
                if (op == std::string("exists")) (void)storage_->exists(c.key);
                if (op == std::string("remove")) (void)storage_->remove(c.key);
            });
            EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << op;
            EXPECT_THAT(e.what(), HasSubstr("invalid storage key")) << op;
            EXPECT_THAT(e.what(), HasSubstr(c.reason)) << op << ": " << e.what();
        }
    }
    // Nothing escaped the root or was created inside it.
    EXPECT_TRUE(files_on_disk().empty());
    EXPECT_FALSE(fs::exists(dir_ / "x"));
}

TEST_F(LocalStorageTest, ListRefusesOrIgnoresEscapingPrefixes) {
    storage_->put("a/b", to_bytes("1"));
    write_text(dir_ / "outside/secret", "s");
    EXPECT_THROW(storage_->list("../"), Error);
    EXPECT_THROW(storage_->list("a/../../"), Error);
    // An absolute prefix must never list anything outside the root.
    std::vector<std::string> listed;
    try {
        listed = storage_->list((dir_ / "outside").string() + "/");
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    }
    EXPECT_TRUE(listed.empty());
}

// One writer replaces a 1 MB object with all-'A' and all-'B' versions as fast as it can while two
// readers read it and a third lists the directory: every read is one whole version, and no temp
// file is ever listed or left behind.
TEST_F(LocalStorageTest, AtomicOverwriteUnderConcurrentReaders) {
    const std::size_t size = 1 << 20;
    const Bytes A(size, 'A'), B(size, 'B');
    const std::string key = "hot/object.bin";
    storage_->put(key, A);

    std::atomic<bool> stop{false};
    std::atomic<int> puts{0}, reads{0}, bad_reads{0}, bad_lists{0}, errors{0};
    std::string first_bad;
    std::mutex bad_mutex;
    auto note = [&](const std::string& what) {
        std::lock_guard lock(bad_mutex);
        if (first_bad.empty()) first_bad = what;
    };

    std::thread writer([&] {
        try {
            for (int i = 0; !stop; ++i) {
                storage_->put(key, (i % 2) ? A : B);
                ++puts;
            }
        } catch (const std::exception& e) {
            ++errors;
            note(std::string("writer: ") + e.what());
        }
    });
    auto reader = [&] {
        try {
            while (!stop) {
                auto got = storage_->get(key);
                ++reads;
                if (!got) {
                    ++bad_reads;
                    note("get returned nothing");
                    continue;
                }
                const Bytes& g = *got;
                const bool whole = g.size() == size && (g == A || g == B);
                if (!whole) {
                    ++bad_reads;
                    note("mixed/short read of " + std::to_string(g.size()) + " bytes");
                }
            }
        } catch (const std::exception& e) {
            ++errors;
            note(std::string("reader: ") + e.what());
        }
    };
    std::thread r1(reader), r2(reader);
    std::thread lister([&] {
        try {
            while (!stop) {
                auto keys = storage_->list("");
                if (keys != std::vector<std::string>{key}) {
                    ++bad_lists;
                    std::string k;
                    for (const auto& x : keys) k += x + " ";
                    note("list() showed: " + k);
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        } catch (const std::exception& e) {
            ++errors;
            note(std::string("lister: ") + e.what());
        }
    });

    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(700) || puts < 20 || reads < 20)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    stop = true;
    writer.join();
    r1.join();
    r2.join();
    lister.join();

    EXPECT_EQ(errors.load(), 0) << first_bad;
    EXPECT_EQ(bad_reads.load(), 0) << first_bad << " (" << reads << " reads, " << puts << " puts)";
    EXPECT_EQ(bad_lists.load(), 0) << first_bad;
    EXPECT_GE(puts.load(), 20);
    EXPECT_GE(reads.load(), 20);
    EXPECT_EQ(files_on_disk(), std::vector<std::string>{key}) << "temp files left behind";
}

TEST_F(LocalStorageTest, FailedPutLeavesNoTempFile) {
    storage_->put("dir/inside", to_bytes("x"));
    // "dir" is a directory, so renaming the temp file over it fails.
    Error e = capture_error([&] { storage_->put("dir", to_bytes("y")); });
    EXPECT_NE(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("'dir'"));
    EXPECT_EQ(files_on_disk(), std::vector<std::string>{"dir/inside"});
    EXPECT_EQ(storage_->list(""), std::vector<std::string>{"dir/inside"});
}

// Issue 22: an I/O error (a full disk) reached HTTP clients naming the absolute data path. The
// message names the storage and the key; the path goes to the server's log only. As root
// (permissions do not stop it) the failures are made with a directory where a file goes and a
// file where a directory goes.
TEST_F(LocalStorageTest, IoErrorsNameTheStorageAndKeyButNotTheServerPath) {
    storage_->put("dir/inside", to_bytes("x"));
    storage_->put("file", to_bytes("x"));
    std::ostringstream log;
    auto logger = make_logger("test");  // the logger MinimalContext hands the plugin
    logger->sinks().push_back(std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
    std::vector<Error> errors;
    errors.push_back(capture_error([&] { storage_->put("dir", to_bytes("y")); }));         // rename over a directory
    errors.push_back(capture_error([&] { storage_->put("file/sub", to_bytes("y")); }));    // a file as a directory
    errors.push_back(capture_error([&] { (void)storage_->remove("dir"); }));               // unlink a directory
    logger->sinks().pop_back();
    const std::string root = root_.string(), tmp = dir_.path().string();
    for (const Error& e : errors) {
        EXPECT_EQ(e.code(), ErrorCode::unavailable) << e.what();
        EXPECT_THAT(e.what(), Not(HasSubstr(root))) << e.what();
        EXPECT_THAT(e.what(), Not(HasSubstr(tmp))) << e.what();
        EXPECT_THAT(e.what(), HasSubstr("storage 'test'")) << e.what();
    }
    EXPECT_THAT(errors[0].what(), HasSubstr("'dir'"));
    EXPECT_THAT(errors[1].what(), HasSubstr("'file/sub'"));
    EXPECT_THAT(errors[2].what(), HasSubstr("'dir'"));
    // The operator still learns where.
    EXPECT_THAT(log.str(), HasSubstr(root)) << log.str();
}

TEST_F(LocalStorageTest, StrayTempFilesAreNeverListed) {
    storage_->put("a/b", to_bytes("1"));
    // What a crash between create and rename leaves behind.
    write_text(root_ / "a/b~tmp~12345", "partial");
    EXPECT_EQ(storage_->list(""), std::vector<std::string>{"a/b"});
    EXPECT_EQ(storage_->list("a/"), std::vector<std::string>{"a/b"});
}

class LocalStorageSymlinkTest : public LocalStorageTest {
protected:
    void SetUp() override {
        LocalStorageTest::SetUp();
        outside_ = dir_ / "outside";
        write_text(outside_ / "secret", "top secret");
        fs::create_directory_symlink(outside_, root_ / "link");
        fs::create_symlink(outside_ / "secret", root_ / "filelink");
    }
    fs::path outside_;
};

TEST_F(LocalStorageSymlinkTest, ReadsAndWritesThroughASymlinkOutOfTheRootAreRefused) {
    Error e = capture_error([&] { (void)storage_->get("link/secret"); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("outside the storage root"));

    e = capture_error([&] { (void)storage_->get("filelink"); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);

    e = capture_error([&] { storage_->put("link/new", to_bytes("x")); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_FALSE(fs::exists(outside_ / "new"));

    e = capture_error([&] { storage_->put("link/secret", to_bytes("overwritten")); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_EQ(read_text(outside_ / "secret"), "top secret");

    // Symlinked directories are not walked by list().
    for (const auto& k : storage_->list("")) EXPECT_EQ(k.find("link/"), std::string::npos) << k;
    EXPECT_EQ(read_text(outside_ / "secret"), "top secret");
}

TEST_F(LocalStorageSymlinkTest, RemoveAndExistsDoNotReachOutsideTheRoot) {
    // exists() must not report an object that get() refuses.
    bool exists = false;
    try {
        exists = storage_->exists("link/secret");
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    }
    EXPECT_FALSE(exists) << "exists() sees a file outside the root through a symlink";

    // remove() must not delete a file outside the root through a symlinked directory.
    try {
        bool removed = storage_->remove("link/secret");
        EXPECT_FALSE(removed) << "remove() reported removing a file outside the root";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    }
    EXPECT_TRUE(fs::exists(outside_ / "secret")) << "remove('link/secret') deleted a file outside the storage root";
}

TEST_F(LocalStorageSymlinkTest, RefusedPutCreatesNothingOutsideTheRoot) {
    EXPECT_THROW(storage_->put("link/newdir/deeper/x", to_bytes("x")), Error);
    EXPECT_FALSE(fs::exists(outside_ / "newdir")) << "a refused put created directories outside the storage root";
}

TEST(LocalStorageConfig, UnusableRootIsAnError) {
    TempDir dir;
    write_text(dir / "file", "not a directory");
    PluginRegistry registry({plugin_dir()});
    registry.load_all();
    const LoadedPlugin& plugin = registry.get(PluginKind::storage, "local");
    YAML::Node node = YAML::Load("{type: local, root: " + yq(dir / "file" / "sub") + "}");
    MinimalContext ctx(Config(node, "s.yaml", "storages.g", plugin.schema()));
    Error e = capture_error([&] { registry.create<PluginKind::storage>(plugin, ctx); });
    EXPECT_THAT(e.what(), HasSubstr("storages.g.root")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("s.yaml:1")) << e.what();
}

}  // namespace
