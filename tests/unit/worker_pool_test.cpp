// The worker pool: try_submit refuses when the queue is full, submit waits for room, and queued
// work is never dropped at destruction.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "sightline/host/worker_pool.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

namespace {

// Occupies the pool's single worker until released.
struct Blocker {
    std::promise<void> started, release;
    std::shared_future<void> released = release.get_future().share();
    std::future<void> submit_to(WorkerPool& pool) {
        auto f = pool.submit([this] {
            started.set_value();
            released.wait();
        });
        return f;
    }
};

TEST(WorkerPool, RunsWorkAndReturnsResults) {
    WorkerPool pool(2, 4);
    EXPECT_EQ(pool.workers(), 2u);
    EXPECT_EQ(pool.queue_limit(), 4u);
    std::vector<std::future<int>> results;
    for (int i = 0; i < 20; ++i) results.push_back(pool.submit([i] { return i * i; }));
    for (int i = 0; i < 20; ++i) EXPECT_EQ(results[static_cast<std::size_t>(i)].get(), i * i);
}

TEST(WorkerPool, ExceptionsReachTheFuture) {
    WorkerPool pool(1, 2);
    auto f = pool.submit([]() -> int { throw Error(ErrorCode::data_loss, "boom"); });
    Error e = capture_error([&] { f.get(); });
    EXPECT_EQ(e.code(), ErrorCode::data_loss);
    // The worker survived.
    EXPECT_EQ(pool.submit([] { return 7; }).get(), 7);
}

TEST(WorkerPool, TrySubmitRefusesWhenTheQueueIsFull) {
    WorkerPool pool(1, 2);
    Blocker blocker;
    auto running = blocker.submit_to(pool);
    blocker.started.get_future().wait();  // the worker holds the blocker; the queue is empty
    EXPECT_EQ(pool.queued(), 0u);

    std::atomic<int> ran{0};
    auto a = pool.try_submit([&] { ++ran; });
    auto b = pool.try_submit([&] { ++ran; });
    EXPECT_EQ(pool.queued(), 2u);
    Error e = capture_error([&] { pool.try_submit([&] { ++ran; }); });
    EXPECT_EQ(e.code(), ErrorCode::resource_exhausted);
    EXPECT_THAT(e.what(), HasSubstr("queue is full"));
    EXPECT_THAT(e.what(), HasSubstr("limits.queue"));
    EXPECT_EQ(pool.queued(), 2u);

    blocker.release.set_value();
    running.get();
    a.get();
    b.get();
    EXPECT_EQ(ran.load(), 2);  // the refused task never ran
    // There is room again.
    EXPECT_NO_THROW(pool.try_submit([] {}).get());
}

TEST(WorkerPool, SubmitWaitsForRoom) {
    WorkerPool pool(1, 1);
    Blocker blocker;
    auto running = blocker.submit_to(pool);
    blocker.started.get_future().wait();
    auto queued = pool.submit([] { return 1; });  // fills the queue

    std::atomic<bool> returned{false};
    std::future<int> late;
    std::thread submitter([&] {
        late = pool.submit([] { return 2; });
        returned = true;
    });
    std::this_thread::sleep_for(200ms);
    EXPECT_FALSE(returned.load()) << "submit() returned although the queue was full";
    EXPECT_EQ(pool.queued(), 1u);

    blocker.release.set_value();
    submitter.join();
    EXPECT_TRUE(returned.load());
    EXPECT_EQ(queued.get(), 1);
    EXPECT_EQ(late.get(), 2);
    running.get();
}

TEST(WorkerPool, AllQueuedWorkRunsBeforeDestruction) {
    std::atomic<int> done{0};
    std::vector<std::future<void>> futures;
    {
        WorkerPool pool(2, 100);
        for (int i = 0; i < 60; ++i)
            futures.push_back(pool.submit([&] {
                std::this_thread::sleep_for(2ms);
                ++done;
            }));
        // Destroyed at once, with most of the work still queued.
    }
    EXPECT_EQ(done.load(), 60);
    for (auto& f : futures) {
        ASSERT_EQ(f.wait_for(0s), std::future_status::ready);
        EXPECT_NO_THROW(f.get());
    }
}

TEST(WorkerPool, ZeroSizesAreClampedToOne) {
    WorkerPool pool(0, 0);
    EXPECT_EQ(pool.workers(), 1u);
    EXPECT_EQ(pool.queue_limit(), 1u);
    EXPECT_EQ(pool.submit([] { return 3; }).get(), 3);
}

}  // namespace
