//! `POST /v1/responses`, as a pipeline of steps, each in its own module:
//!
//! 1. **authenticate**: the caller's tenant ([`crate::auth`]);
//! 2. **parse and validate** the body ([`CreateRequest::parse`]);
//! 3. **resolve state** ([`resolve`]): the conversation it continues, item
//!    references, the replay;
//! 4. **render** the chat request and pick its backend ([`render`]);
//! 5. **run the model loop** ([`model`]): the backend calls that make the
//!    response, their chunks turned into events by the [`EventStream`];
//! 6. **store** the response before its terminal event ([`save`]), and
//!    add its items to its conversation object, if it has one;
//! 7. **emit** the events to the client ([`emit`]).
//!
//! [`Create::start`] runs steps 1 to 4: its errors are answered as plain
//! HTTP errors. [`Create::run`] does the rest, streaming to an
//! [`EventSink`]: a plain request's failure there (a backend's refusal
//! included) is still answered as the HTTP error it is, with nothing
//! stored; a stream sends `response.created` and `response.in_progress`
//! before the backend is called, so from then on a failure ends the stream
//! in `error` and `response.failed`, and the stream carries keep-alive
//! comments while the backend is silent.

pub mod background;
pub mod emit;
mod hosted;
pub(crate) mod model;
mod render;
pub(crate) mod resolve;
mod save;
pub mod socket;
mod truncate;

pub use emit::{Discard, EventSink, LiveSink, KEEP_ALIVE_FRAME};
pub use resolve::{prepare_input, with_id};

use crate::api::items::Item;
use crate::api::request::CreateRequest;
use crate::api::response::Response;
use crate::backend::Backend;
use crate::chat::Rendered;
use crate::error::ApiError;
use crate::service::Service;
use crate::store::{Conversation, Kv};
use crate::stream::EventStream;

use emit::{Emitter, KeepAlive};
use hosted::Hosted;
use model::{Call, Ended, ModelLoop};
use save::Finished;

/// A create, resolved and ready to call the backend.
pub struct Create<'s, K: Kv, B: Backend> {
    service: &'s Service<K, B>,
    tenant: String,
    stream: EventStream,
    model: ModelLoop<'s, B>,
    input: Vec<Item>,
    /// The conversation this request continues.
    parent: Option<Conversation>,
    /// The conversation object its items are added to when it completes.
    conversation: Option<String>,
    /// The `compaction` item that replaced its history, the first of its
    /// output.
    compaction: Option<Item>,
    store: bool,
    /// Whether the client asked for an event stream.
    pub streaming: bool,
    /// Whether it runs in the background (`background: true`): its events
    /// are kept, and it goes on without its client.
    pub background: bool,
    /// Whether the model is called (`generate: false` is a warm-up).
    generate: bool,
}

impl<'s, K: Kv, B: Backend> Create<'s, K, B> {
    /// Steps 1 to 4: client errors are errors here; backend failures come
    /// later, from [`run`](Self::run).
    pub async fn start(
        service: &'s Service<K, B>,
        api_key: Option<&'s str>,
        body: &[u8],
    ) -> Result<Self, ApiError> {
        Self::start_turn(service, api_key, body, None).await
    }

    /// [`start`](Self::start), for a WebSocket turn when `turn` is given
    /// (see [`socket`]).
    pub async fn start_turn(
        service: &'s Service<K, B>,
        api_key: Option<&'s str>,
        body: &[u8],
        turn: Option<socket::Turn>,
    ) -> Result<Self, ApiError> {
        let tenant = service.tenant(api_key)?;
        let mut request = CreateRequest::parse(body)?;
        let remembered = match turn {
            Some(turn) => turn.apply(&mut request)?,
            None => None,
        };
        service.admit(&tenant)?;
        let background = request.background == Some(true);
        if background && !request.store() {
            return Err(ApiError::invalid_param(
                "background",
                "A background response must be stored: leave 'store' true.",
            ));
        }
        let settings = &service.settings;
        crate::compact::check_input(settings, &tenant, request.input.as_ref())?;
        let store = service.store(&tenant);
        let conversations = service.conversations(&tenant);
        let window = settings.context_window(request.model());
        let replay = resolve::Replay {
            send_reasoning: settings.backend_reasoning,
            window: window.filter(|_| request.truncation.as_deref() == Some("auto")),
            // Without a threshold of its own, compaction starts at four
            // fifths of the model's window.
            compact_at: request.compact_threshold().or_else(|| {
                request
                    .context_management
                    .as_ref()
                    .and(window.map(|w| w / 5 * 4))
            }),
        };
        let mut resolved =
            resolve::resolve(&request, &store, &conversations, &service.env, replay)?;
        // context_management: the history gives way to its compaction.
        let mut compaction = None;
        if let Some(history) = resolved.to_compact.take() {
            let (item, _) =
                crate::compact::summarize(service, api_key, &tenant, &request, &history).await?;
            let items: Vec<Item> = std::iter::once(item.clone())
                .chain(resolved.input.iter().cloned())
                .collect();
            resolved.rendered = Rendered::new(&items, replay.send_reasoning).messages;
            compaction = Some(item);
        }
        // A continuation of a remembered response names it, as one from
        // the store does.
        if remembered.is_some() {
            request.previous_response_id = remembered;
        }
        let plan = render::render(&request, &settings.routes, resolved.kept, resolved.rendered)?;
        let call = Call {
            backend: &service.backend,
            route: plan.route,
            learned: &service.learned,
            client_key: service.client_key(api_key),
        };
        let hosted = Hosted::new(
            &request,
            &resolved.input,
            resolved.mcp_history,
            settings,
            &service.backend,
            service.env.timer(),
        )?;
        let model = ModelLoop::new(call, plan.chat, request.max_tool_calls)
            .with_hosted(hosted, settings.backend_reasoning);
        let env = service.env.clone();
        let response = Response::start(env.new_id("resp"), env.now(), &request);
        let mut stream = EventStream::new(response, plan.tools, env);
        if plan.route.think_tags {
            stream = stream.with_think_tags();
        }
        Ok(Create {
            service,
            tenant,
            stream,
            model,
            input: resolved.input,
            parent: resolved.parent,
            compaction,
            conversation: request.conversation.clone(),
            store: request.store(),
            streaming: request.stream(),
            background,
            generate: request.generate != Some(false),
        })
    }

    /// The tenant it runs for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Whether it is stored.
    pub fn stored(&self) -> bool {
        self.store
    }

    /// Its input as stored: ids given, references resolved.
    pub fn input(&self) -> &[Item] {
        &self.input
    }

    /// The response as a background create answers it: `queued`.
    pub fn queued(&self) -> Response {
        let mut response = self.stream.response().clone();
        response.status = crate::api::response::ResponseStatus::Queued;
        response
    }

    /// Steps 5 to 7: streams the model's answer into `sink`, stores the
    /// response before its terminal event, and returns it with the error
    /// that ended it, if any.
    pub async fn run(mut self, sink: &mut impl EventSink) -> (Response, Option<ApiError>) {
        // A background response ticks every second while it waits: its
        // sink reads the cancel mark, renews the lease, and passes a
        // keep-alive to a listening client when one is due.
        let every = match self.background {
            true => Some(background::TICK),
            false => self.service.settings.stream_keepalive(),
        };
        let keep_alive = every.map(|every| KeepAlive {
            timer: self.service.env.timer(),
            every,
        });
        // A background response keeps its events (and its stream resumable)
        // even when its client did not ask for them.
        let evented = self.streaming || self.background;
        let mut out = Emitter::new(sink, evented).with_keep_alive(keep_alive);
        let mut first = match self.background {
            true => self.stream.start_queued(),
            false => self.stream.start(),
        };
        if let Some(item) = self.compaction.take() {
            first.extend(self.stream.complete_item(item));
        }
        if !out.events(first).await {
            return match out.cancelled() {
                true => self.cancelled(out).await,
                false => self.interrupted(),
            };
        }
        let ended = match self.generate {
            true => self.model.run(&mut self.stream, &mut out).await,
            false => Ended::Finished,
        };
        let failure = match ended {
            Ended::Finished => None,
            Ended::Failed(error) => Some(error),
            Ended::ClientGone if out.cancelled() => return self.cancelled(out).await,
            Ended::ClientGone => return self.interrupted(),
        };
        let mut events = match &failure {
            Some(error) => self.stream.fail(error),
            None => self.stream.finish(),
        };
        // A plain request that failed is answered with an error alone: its
        // client never learns the response's id, so nothing is stored. A
        // stream has already shown the id, so its failure is kept.
        // A response that completes adds its items to its conversation
        // object, before its client hears it is done.
        let stored = match (&failure, evented) {
            (Some(_), false) => Ok(()),
            (Some(_), true) => self.save(),
            (None, _) => self.save().and_then(|()| self.add_to_conversation()),
        };
        let failure = match stored {
            Ok(()) => failure,
            Err(error) => {
                events = self.stream.fail_instead(events, &error);
                Some(error)
            }
        };
        out.events(events).await;
        out.done().await;
        self.leave_sessions();
        (self.stream.into_response(), failure)
    }

    /// Hands the MCP sessions the response opened to the service, which
    /// ends them after the answer.
    fn leave_sessions(&self) {
        let ending = self.model.end_sessions();
        if !ending.is_empty() {
            self.service.sessions.borrow_mut().extend(ending);
        }
    }

    /// The client cancelled a background response: keep what was
    /// produced, marked `cancelled`, and end its events.
    async fn cancelled<S: EventSink>(
        mut self,
        mut out: Emitter<'_, S>,
    ) -> (Response, Option<ApiError>) {
        let mut events = self.stream.cancel();
        let error = self.save().err();
        if let Some(error) = &error {
            events = self.stream.fail_instead(events, error);
        }
        out.events(events).await;
        out.done().await;
        self.leave_sessions();
        (self.stream.into_response(), error)
    }

    /// The client went away: keep what was produced, marked incomplete.
    fn interrupted(mut self) -> (Response, Option<ApiError>) {
        self.leave_sessions();
        self.stream.interrupt();
        let error = self.save().err();
        (self.stream.into_response(), error)
    }

    /// Appends the input and output items to the conversation object. A
    /// compaction the response opens with goes first, and the conversation's
    /// context starts from it.
    fn add_to_conversation(&self) -> Result<(), ApiError> {
        let Some(id) = &self.conversation else {
            return Ok(());
        };
        let conversations = self.service.conversations(&self.tenant);
        let output = &self.stream.response().output;
        let compaction = output.first().filter(|item| item.is_compaction());
        let rest = &output[usize::from(compaction.is_some())..];
        let items: Vec<Item> = compaction
            .into_iter()
            .chain(&self.input)
            .chain(rest)
            .cloned()
            .collect();
        conversations.append(id, &items)?;
        let Some(from) = compaction.and_then(Item::id) else {
            return Ok(());
        };
        if let Some(mut record) = conversations.record(id)? {
            record.context_from = Some(from.to_owned());
            conversations.write(&record)?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), ApiError> {
        if !self.store {
            return Ok(());
        }
        let settings = &self.service.settings;
        let finished = Finished {
            response: self.stream.response(),
            input: &self.input,
            parent: self.parent.as_ref(),
            send_reasoning: settings.backend_reasoning,
            expires_at: settings
                .response_ttl_seconds
                .map(|ttl| self.service.env.now().saturating_add(ttl)),
        };
        save::save(&self.service.store(&self.tenant), finished)
    }
}
