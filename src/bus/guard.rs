//! The gate in front of `org.orch.Orch1`: every method call and property
//! read passes [`super::access`] before zbus decodes one argument of it.
//!
//! Why a wrapper: the `#[interface]` macro decodes a call's arguments
//! before the method body runs, so a check inside the method comes too
//! late. A 30 MiB `BanMany` from an unprivileged user was decoded into
//! millions of strings before it was refused. `Guarded` implements zbus's
//! `Interface` by delegating to the macro-built one and deciding first,
//! from the header only. (zbus calls that trait unstable; orch pins zbus in
//! Cargo.lock, and this file is the one place that would need a change.)
//!
//! It must not decide anything itself (that is `access.rs`), nor run any
//! request (that is the service).

use std::collections::HashMap;
use std::fmt::Write;

use zbus::message::{Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult, Interface, SignalEmitter};
use zbus::zvariant::{OwnedVariant, Variant};
use zbus::{BoxDBusError, Connection, ObjectServer, fdo};

use super::access::{Access, Action, ReadPermit};
use super::errors::OrchError;

/// An interface whose calls are authorised, and whose reads are counted,
/// before they reach `inner`.
pub struct Guarded<I> {
    inner: I,
    access: Access,
}

impl<I> Guarded<I> {
    pub fn new(inner: I, access: Access) -> Self {
        Guarded { inner, access }
    }

    /// Decides a call or read from its header: `Ok(permit)` to go on.
    async fn admit(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        action: Action,
    ) -> Result<Option<ReadPermit>, OrchError> {
        let uid = self.access.caller_uid(connection, header.sender()).await?;
        let interactive = header
            .primary()
            .flags()
            .contains(zbus::message::Flags::ALLOW_INTERACTIVE_AUTH);
        self.access
            .authorize(connection, header.sender(), uid, action, interactive)
            .await?;
        if action == Action::Read {
            return self.access.start_read(uid);
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl<I: Interface> Interface for Guarded<I> {
    fn name() -> InterfaceName<'static>
    where
        Self: Sized,
    {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.inner.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<OwnedVariant, BoxDBusError>> {
        let _permit = match header {
            Some(header) => match self.admit(connection, header, Action::Read).await {
                Ok(permit) => permit,
                Err(refused) => return Some(Err(Box::new(refused))),
            },
            None => None,
        };
        self.inner
            .get(property_name, server, connection, header, emitter)
            .await
    }

    async fn get_all(
        &self,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedVariant>> {
        let _permit = match header {
            // GetAll can only fail with an fdo error: a busy caller gets
            // LimitsExceeded, a refused one AccessDenied.
            Some(header) => match self.admit(connection, header, Action::Read).await {
                Ok(permit) => permit,
                Err(OrchError::Busy(message)) => return Err(fdo::Error::LimitsExceeded(message)),
                Err(other) => return Err(fdo::Error::AccessDenied(other.to_string())),
            },
            None => None,
        };
        self.inner
            .get_all(server, connection, header, emitter)
            .await
    }

    fn set<'call>(
        &'call self,
        _property_name: &'call str,
        _value: &'call Variant<'_>,
        _server: &'call ObjectServer,
        _connection: &'call Connection,
        _header: Option<&'call Header<'_>>,
        _emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult<'call> {
        // Every property of org.orch.Orch1 is read-only.
        DispatchResult::NotFound
    }

    async fn set_mut(
        &mut self,
        _property_name: &str,
        _value: &Variant<'_>,
        _server: &ObjectServer,
        _connection: &Connection,
        _header: Option<&Header<'_>>,
        _emitter: &SignalEmitter<'_>,
    ) -> Option<Result<(), BoxDBusError>> {
        None
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        let Some(action) = Action::of_member(name.as_str()) else {
            return self.inner.call(server, connection, msg, name);
        };
        DispatchResult::Async(Box::pin(async move {
            let header = msg.header();
            let _permit = match self.admit(connection, &header, action).await {
                Ok(permit) => permit,
                // The dispatcher replies with this error.
                Err(refused) => return Err(Box::new(refused) as BoxDBusError),
            };
            let unknown = format!("unknown method {}", name.as_str());
            match self.inner.call(server, connection, msg, name) {
                DispatchResult::Async(call) => call.await,
                DispatchResult::NotFound | DispatchResult::RequiresMut => {
                    Err(Box::new(fdo::Error::UnknownMethod(unknown)))
                }
            }
        }))
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        // orch's methods all take &self; nothing is dispatched here unguarded.
        let _ = (server, connection, msg, name);
        DispatchResult::NotFound
    }

    fn introspect_to_writer(&self, writer: &mut dyn Write, level: usize) {
        self.inner.introspect_to_writer(writer, level)
    }
}
