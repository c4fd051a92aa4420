#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <sightline/error.hpp>

namespace sightline::host {

// A fixed set of threads over a bounded queue. try_submit refuses at once when the queue is full
// (a server answers 503); submit waits for room (batch work such as ingest).
class WorkerPool {
public:
    WorkerPool(std::size_t workers, std::size_t queue_limit);
    ~WorkerPool();
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    template <class F> auto try_submit(F&& f) -> std::future<std::invoke_result_t<F>> {
        return enqueue(std::forward<F>(f), false);
    }
    template <class F> auto submit(F&& f) -> std::future<std::invoke_result_t<F>> {
        return enqueue(std::forward<F>(f), true);
    }

    std::size_t workers() const { return threads_.size(); }
    std::size_t queue_limit() const { return limit_; }
    std::size_t queued() const;

    // Sets OpenCV's own thread count so that `workers` busy threads do not oversubscribe the cores.
    static void configure_opencv_threads(std::size_t workers);

private:
    template <class F> auto enqueue(F&& f, bool wait) -> std::future<std::invoke_result_t<F>> {
        using R = std::invoke_result_t<F>;
        auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(f));
        auto future = task->get_future();
        {
            std::unique_lock lock(mutex_);
            if (wait)
                room_.wait(lock, [&] { return stopping_ || queue_.size() < limit_; });
            if (stopping_) throw Error(ErrorCode::unavailable, "the worker pool is shutting down");
            if (queue_.size() >= limit_)
                throw Error(ErrorCode::resource_exhausted,
                            "the request queue is full (" + std::to_string(limit_) + " waiting, limits.queue)");
            queue_.emplace_back([task] { (*task)(); });
        }
        work_.notify_one();
        return future;
    }
    void run();

    std::size_t limit_;
    mutable std::mutex mutex_;
    std::condition_variable work_, room_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace sightline::host
