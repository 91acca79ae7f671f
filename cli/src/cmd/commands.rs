//! What each `vibe` command does.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use vibe_identity::Keypair;

use super::args::{AppsCommand, BlobCommand, Cli, Command, DevicesCommand, SyncArgs};
use super::output::{Out, pretty};
use crate::client::{Client, Instance, ReadQuery, TokenSource};
use crate::error::{ClientError, Result};
use crate::keyfile;
use crate::session::{ConfigDir, StoredSession};
use crate::sync::FolderSync;
use crate::watch::{Event, Signal, Watch};

struct Context {
    cli_instance: Option<String>,
    config: ConfigDir,
    key_path: PathBuf,
    app: Option<String>,
    app_token: Option<String>,
    out: Out,
}

impl Context {
    fn key(&self) -> Result<Keypair> {
        keyfile::load(&self.key_path)
    }

    fn instance(&self) -> Result<Instance> {
        Instance::new(&self.config.instance_url(self.cli_instance.as_deref())?)
    }

    /// The owner's client from the stored session.
    fn owner(&self) -> Result<Client> {
        self.config.client(&self.instance()?)
    }

    /// A client acting as an app: an app token, or the owner session with --app.
    fn acting(&self) -> Result<Client> {
        if let Some(token) = &self.app_token {
            let client = Client::new(self.instance()?, TokenSource::fixed(token.clone()));
            // An explicit --app is still sent, so the instance can refuse a mismatch.
            return Ok(match &self.app {
                Some(app) => client.as_app(app),
                None => client,
            });
        }
        let owner = self.owner()?;
        match &self.app {
            Some(app) => Ok(owner.as_app(app)),
            None => Err(ClientError::Usage(
                "this command acts as an app: pass --app APP_ID (or set VIBE_APP), after \
                 granting it, e.g. `vibe apps grant APP_ID read:notes write:notes`"
                    .into(),
            )),
        }
    }

    /// Owner session, acting as --app when given (for sync).
    fn owner_or_app(&self) -> Result<Client> {
        if self.app_token.is_some() || self.app.is_some() {
            self.acting()
        } else {
            self.owner()
        }
    }
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let config = ConfigDir::resolve(cli.config_dir.clone())?;
    let key_path = cli.key.clone().unwrap_or_else(|| config.key_path());
    let context = Context {
        cli_instance: cli.instance.clone(),
        config,
        key_path,
        app: cli.app.clone(),
        app_token: cli.app_token.clone(),
        out: Out {
            json: cli.json,
            progress: !cli.no_progress,
        },
    };
    match cli.command {
        Command::Keygen { force } => keygen(&context, force),
        Command::Whoami => whoami(&context),
        Command::Status => status(&context).await,
        Command::Claim { code } => claim(&context, &code).await,
        Command::Login => login(&context).await,
        Command::Logout => logout(&context).await,
        Command::Console { open, ttl } => console(&context, open, ttl).await,
        Command::Apps(command) => apps(&context, command).await,
        Command::Devices(command) => devices(&context, command).await,
        Command::Export {
            output,
            no_blobs,
            plain,
        } => export(&context, &output, !no_blobs, !plain).await,
        Command::Import { file } => import(&context, &file).await,
        Command::Restore { abandon: false, .. } => restore(&context).await,
        Command::Restore { abandon: true, yes } => abandon_restore(&context, yes).await,
        Command::Migrate { to } => migrate(&context, &to).await,
        Command::Put { collection, data } => put(&context, &collection, data).await,
        Command::Get { collection, id } => {
            let doc = context.acting()?.get(&collection, &id).await?;
            context.out.result(|| pretty(&doc), &doc);
            Ok(())
        }
        Command::Find {
            collection,
            filter,
            limit,
            sort,
            fields,
            bookmark,
            all,
        } => {
            let query = ReadQuery {
                collection,
                filter: filter.map(|f| parse_json("--filter", &f)).transpose()?,
                limit: limit.map(u64::from),
                sort: sort.map(|s| parse_json("--sort", &s)).transpose()?,
                fields: (!fields.is_empty()).then_some(fields),
                bookmark,
            };
            find(&context, query, all).await
        }
        Command::Delete {
            collection,
            id,
            rev,
        } => delete(&context, &collection, &id, rev).await,
        Command::Blob(command) => blob(&context, command).await,
        Command::Watch {
            collection,
            since,
            count,
            reconnect_for,
        } => watch(&context, &collection, since, count, reconnect_for).await,
        Command::Sync(args) => sync(&context, args).await,
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| ClientError::Usage(format!("{what} is not JSON: {e}")))
}

fn keygen(context: &Context, force: bool) -> Result<()> {
    let key = keyfile::generate(&context.key_path, force)?;
    let did = key.did().to_string();
    context.out.result(
        || {
            format!(
                "{did}\n(key stored in {}, mode 0600)",
                context.key_path.display()
            )
        },
        &json!({ "did": did, "keyFile": context.key_path }),
    );
    Ok(())
}

fn whoami(context: &Context) -> Result<()> {
    let did = context.key().ok().map(|k| k.did().to_string());
    let sessions = context.config.load_sessions()?;
    let instances: Vec<Value> = sessions
        .instances
        .iter()
        .map(|(url, s)| {
            json!({
                "instance": url,
                "did": s.did,
                "default": sessions.default_instance.as_deref() == Some(url),
                "refreshTokenExpiresAt": s.tokens.refresh_token_expires_at,
            })
        })
        .collect();
    let value = json!({ "did": did, "keyFile": context.key_path, "sessions": instances });
    context.out.result(
        || {
            let mut lines = vec![match &did {
                Some(did) => format!("DID: {did}"),
                None => format!(
                    "no key at {} (run `vibe keygen`)",
                    context.key_path.display()
                ),
            }];
            for s in &instances {
                lines.push(format!(
                    "logged in to {}{}",
                    s["instance"].as_str().unwrap_or_default(),
                    if s["default"] == true {
                        " (default)"
                    } else {
                        ""
                    }
                ));
            }
            lines.join("\n")
        },
        &value,
    );
    Ok(())
}

async fn status(context: &Context) -> Result<()> {
    let instance = context.instance()?;
    let health = instance.health().await?;
    let ready = match instance.ready().await {
        Ok(body) => json!({ "ready": true, "body": body }),
        Err(ClientError::Api {
            status,
            body,
            message,
        }) => {
            json!({ "ready": false, "status": status, "body": body, "message": message })
        }
        Err(e) => return Err(e),
    };
    let value = json!({ "instance": instance.url(), "health": health, "ready": ready });
    context.out.result(
        || {
            format!(
                "{}: {} {} — {}",
                instance.url(),
                health["service"].as_str().unwrap_or("?"),
                health["version"].as_str().unwrap_or("?"),
                if ready["ready"] == true {
                    "ready".to_string()
                } else {
                    format!("NOT ready: {}", ready["message"].as_str().unwrap_or("?"))
                }
            )
        },
        &value,
    );
    if ready["ready"] == true {
        Ok(())
    } else {
        Err(ClientError::Usage("the instance is not ready".into()))
    }
}

async fn store_login(context: &Context, instance: &Instance, key: &Keypair) -> Result<String> {
    let tokens = instance.login(key).await?;
    let did = key.did().to_string();
    context.config.store_session(
        &instance.url(),
        StoredSession {
            did: did.clone(),
            tokens,
        },
    )?;
    Ok(did)
}

async fn claim(context: &Context, code: &str) -> Result<()> {
    let key = context.key()?;
    let Some(url) = &context.cli_instance else {
        return Err(ClientError::Usage(
            "claim needs the instance: pass --instance URL or set VIBE_INSTANCE".into(),
        ));
    };
    let instance = Instance::new(url)?;
    let claimed = instance.claim(&key, code).await?;
    let did = store_login(context, &instance, &key).await?;
    context.out.result(
        || format!("{did} now owns {} and is logged in", instance.url()),
        &json!({ "instance": instance.url(), "did": did, "claim": claimed }),
    );
    Ok(())
}

async fn login(context: &Context) -> Result<()> {
    let key = context.key()?;
    let instance = context.instance()?;
    let did = store_login(context, &instance, &key).await?;
    context.out.result(
        || format!("logged in to {} as {did}", instance.url()),
        &json!({ "instance": instance.url(), "did": did }),
    );
    Ok(())
}

/// `vibe console`: a one-time console link from the owner session (logging in with the
/// key first when there is none), printed and, with --open, handed to a browser.
async fn console(context: &Context, open: bool, ttl: Option<u64>) -> Result<()> {
    let client = match context.owner() {
        Ok(client) => client,
        Err(ClientError::NotLoggedIn { .. }) => {
            let key = context.key()?;
            store_login(context, &context.instance()?, &key).await?;
            context.owner()?
        }
        Err(e) => return Err(e),
    };
    let minted = client.console_code(ttl).await?;
    let opened = open && open_in_browser(&minted.url);
    if open && !opened {
        context
            .out
            .note("could not start a browser; open the link yourself");
    }
    let expires = chrono::DateTime::from_timestamp(minted.expires_at, 0)
        .map(|t| t.format("%H:%M:%S UTC").to_string())
        .unwrap_or_default();
    context.out.result(
        || {
            format!(
                "{}\n(works once, until {expires}; run `vibe console` again for a new link)",
                minted.url
            )
        },
        &json!({ "url": minted.url, "expiresAt": minted.expires_at, "opened": opened }),
    );
    Ok(())
}

/// Hand `url` to the desktop's browser opener; whether one started.
fn open_in_browser(url: &str) -> bool {
    let openers: &[&str] = if cfg!(target_os = "macos") {
        &["open"]
    } else {
        &["xdg-open", "gio", "sensible-browser"]
    };
    openers.iter().any(|opener| {
        let mut command = std::process::Command::new(opener);
        if *opener == "gio" {
            command.arg("open");
        }
        command
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
    })
}

async fn logout(context: &Context) -> Result<()> {
    let instance = context.instance()?;
    let client = context.owner()?;
    if let Some(mut tokens) = client.tokens().current().await {
        // Make sure the access token is valid so the revocation is authorised.
        tokens.access_token = client.access_token().await.unwrap_or(tokens.access_token);
        if let Some(current) = client.tokens().current().await {
            tokens = current;
        }
        if let Err(e) = instance.logout(&tokens).await {
            context.out.note(&format!(
                "warning: the instance did not confirm the logout: {e}"
            ));
        }
    }
    context.config.remove_session(&instance.url())?;
    context.out.result(
        || format!("logged out of {}", instance.url()),
        &json!({ "instance": instance.url(), "loggedOut": true }),
    );
    Ok(())
}

async fn apps(context: &Context, command: AppsCommand) -> Result<()> {
    let client = context.owner()?;
    match command {
        AppsCommand::List => {
            let apps = client.list_apps().await?;
            context.out.result(
                || {
                    let list = apps["apps"].as_array().cloned().unwrap_or_default();
                    if list.is_empty() {
                        return "no apps registered".into();
                    }
                    list.iter()
                        .map(|app| {
                            let id = app["appId"]
                                .as_str()
                                .or(app["manifest"]["appId"].as_str())
                                .unwrap_or("?");
                            format!("{id}: {}", grants_line(&app["grants"]))
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
                &apps,
            );
        }
        AppsCommand::Status { app_id } => {
            let status = client.app_status(&app_id).await?;
            let value = serde_json::to_value(&status).expect("serializes");
            context.out.result(
                || {
                    if status.is_registered {
                        format!("{app_id}: {}", grants_line(&value["grants"]))
                    } else {
                        format!("{app_id} is not registered")
                    }
                },
                &value,
            );
        }
        AppsCommand::Grant {
            app_id,
            permissions,
            name,
            setting,
        } => {
            let status = client
                .set_grants(&app_id, name.as_deref(), &permissions, &setting)
                .await?;
            let value = serde_json::to_value(&status).expect("serializes");
            context.out.result(
                || format!("{app_id}: {}", grants_line(&value["grants"])),
                &value,
            );
        }
        AppsCommand::Revoke {
            app_id,
            permissions,
        } => {
            let status = client.app_status(&app_id).await?;
            if !status.is_registered {
                return Err(ClientError::Usage(format!("{app_id} is not registered")));
            }
            let status = client
                .set_grants(&app_id, None, &permissions, "never")
                .await?;
            let value = serde_json::to_value(&status).expect("serializes");
            context.out.result(
                || format!("{app_id}: {}", grants_line(&value["grants"])),
                &value,
            );
        }
        AppsCommand::Rm { app_id } => {
            client.remove_app(&app_id).await?;
            context.out.result(
                || format!("{app_id} removed"),
                &json!({ "appId": app_id, "removed": true }),
            );
        }
        AppsCommand::Token { app_id } => {
            let token = client.app_token(&app_id).await?;
            let value = serde_json::to_value(&token).expect("serializes");
            context.out.result(|| token.access_token.clone(), &value);
        }
    }
    Ok(())
}

async fn devices(context: &Context, command: DevicesCommand) -> Result<()> {
    let client = context.owner()?;
    match command {
        DevicesCommand::Add { name, app, scopes } => {
            for scope in &scopes {
                crate::client::check_permission(scope)?;
            }
            let device = client
                .register_device(&name, app.as_deref(), &scopes)
                .await?;
            let mut value = serde_json::to_value(&device).expect("serializes");
            value["authorization"] = json!(device.credentials.authorization());
            context.out.result(
                || {
                    format!(
                        "device {} registered\nurl:      {}\nuser:     {}\npassword: {}\n\
                         (the password is not shown again)",
                        device.device_id,
                        device.sync_url,
                        device.credentials.username,
                        device.credentials.password
                    )
                },
                &value,
            );
        }
        DevicesCommand::List => {
            let devices = client.list_devices().await?;
            context.out.result(
                || {
                    let list = devices["devices"].as_array().cloned().unwrap_or_default();
                    if list.is_empty() {
                        return "no devices".into();
                    }
                    list.iter()
                        .map(|d| {
                            format!(
                                "{}  {}  {}  scopes: {}",
                                d["deviceId"].as_str().unwrap_or("?"),
                                d["name"].as_str().unwrap_or("?"),
                                d["appId"].as_str().unwrap_or("(owner)"),
                                d["scopes"]
                                    .as_array()
                                    .map(|s| s
                                        .iter()
                                        .filter_map(Value::as_str)
                                        .collect::<Vec<_>>()
                                        .join(","))
                                    .unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
                &devices,
            );
        }
        DevicesCommand::Revoke { device_id } => {
            client.revoke_device(&device_id).await?;
            context.out.result(
                || format!("device {device_id} revoked"),
                &json!({ "deviceId": device_id, "revoked": true }),
            );
        }
    }
    Ok(())
}

fn grants_line(grants: &Value) -> String {
    match grants.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(p, s)| format!("{p}={}", s.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "no grants".into(),
    }
}

async fn put(context: &Context, collection: &str, data: Option<String>) -> Result<()> {
    let text = match data.as_deref() {
        None | Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| ClientError::io("stdin", e))?;
            text
        }
        Some(text) => text.to_string(),
    };
    let value = parse_json("the document", &text)?;
    let client = context.acting()?;
    match &value {
        Value::Array(docs) => {
            let (status, results) = client.write_bulk(collection, docs).await?;
            let failed = results.iter().filter(|r| !r["error"].is_null()).count();
            let body = json!({ "status": status, "results": results });
            context.out.result(
                || {
                    results
                        .iter()
                        .map(|r| match r["error"].as_str() {
                            None => format!(
                                "{} {}",
                                r["id"].as_str().unwrap_or("?"),
                                r["rev"].as_str().unwrap_or("?")
                            ),
                            Some(e) => format!(
                                "{} FAILED {e}: {}",
                                r["id"].as_str().unwrap_or("?"),
                                r["reason"].as_str().unwrap_or("")
                            ),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
                &body,
            );
            if failed > 0 {
                return Err(ClientError::Api {
                    status,
                    message: format!("{failed} of {} documents were not written", results.len()),
                    body,
                });
            }
        }
        Value::Object(_) => {
            let written = client.write(collection, &value).await?;
            let body = serde_json::to_value(&written).expect("serializes");
            context
                .out
                .result(|| format!("{} {}", written.id, written.rev), &body);
        }
        _ => {
            return Err(ClientError::Usage(
                "a document must be a JSON object, or an array of objects".into(),
            ));
        }
    }
    Ok(())
}

async fn find(context: &Context, mut query: ReadQuery, all: bool) -> Result<()> {
    let client = context.acting()?;
    loop {
        let page = client.read(&query).await?;
        let value = serde_json::to_value(&page).expect("serializes");
        context.out.result(
            || {
                page.docs
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            },
            &value,
        );
        let next = page
            .bookmark
            .filter(|b| !b.is_empty() && !page.docs.is_empty());
        match next {
            Some(bookmark) if all && query.bookmark.as_ref() != Some(&bookmark) => {
                query.bookmark = Some(bookmark)
            }
            Some(bookmark) => {
                context
                    .out
                    .note(&format!("next page: --bookmark {bookmark}"));
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

async fn delete(context: &Context, collection: &str, id: &str, rev: Option<String>) -> Result<()> {
    let client = context.acting()?;
    let rev = match rev {
        Some(rev) => rev,
        None => {
            let doc = client.get(collection, id).await?;
            doc["_rev"].as_str().map(str::to_string).ok_or_else(|| {
                ClientError::InvalidResponse {
                    what: "GET document".into(),
                    problem: "no _rev".into(),
                }
            })?
        }
    };
    let body = client.delete(collection, id, &rev).await?;
    context.out.result(
        || {
            format!(
                "deleted {collection}/{}",
                crate::client::local_id(collection, id)
            )
        },
        &json!({ "deleted": true, "collection": collection, "id": id, "response": body }),
    );
    Ok(())
}

async fn blob(context: &Context, command: BlobCommand) -> Result<()> {
    let client = context.acting()?;
    match command {
        BlobCommand::Put {
            collection,
            file,
            content_type,
            stream,
        } => {
            let size = std::fs::metadata(&file)
                .map_err(|e| ClientError::io(&file, e))?
                .len();
            let name = file.display().to_string();
            let (bar, progress) = context.out.bar(Some(size), &format!("uploading {name}"));
            let meta = if stream {
                client
                    .blob_stream_file(&collection, &file, content_type.as_deref(), Some(progress))
                    .await
            } else {
                client
                    .blob_put_file(&collection, &file, content_type.as_deref(), Some(progress))
                    .await
            };
            bar.finish_and_clear();
            let meta = meta?;
            let key = meta["objectKey"]
                .as_str()
                .or(meta["_id"].as_str())
                .unwrap_or("?")
                .to_string();
            context
                .out
                .result(|| format!("{key} ({size} bytes)"), &meta);
        }
        BlobCommand::Get { object_key, output } => {
            let output = output
                .unwrap_or_else(|| PathBuf::from(object_key.rsplit('/').next().unwrap_or("blob")));
            let out = context.out;
            let bar_slot = std::sync::Arc::new(std::sync::Mutex::new(None));
            let slot = bar_slot.clone();
            let progress: crate::client::Progress = std::sync::Arc::new(move |n| {
                if let Some(bar) = slot.lock().expect("bar lock").as_ref() {
                    let bar: &indicatif::ProgressBar = bar;
                    bar.inc(n);
                }
            });
            let name = output.display().to_string();
            let total = client
                .blob_get_to_file(
                    &object_key,
                    &output,
                    |length| {
                        let (bar, _) = out.bar(length, &format!("downloading {name}"));
                        *bar_slot.lock().expect("bar lock") = Some(bar);
                    },
                    Some(progress),
                )
                .await;
            if let Some(bar) = bar_slot.lock().expect("bar lock").take() {
                bar.finish_and_clear();
            }
            let total = total?;
            context.out.result(
                || format!("{} ({total} bytes)", output.display()),
                &json!({ "objectKey": object_key, "file": output, "bytes": total }),
            );
        }
        BlobCommand::Rm { object_key } => {
            client.blob_delete(&object_key).await?;
            context.out.result(
                || format!("deleted {object_key}"),
                &json!({ "objectKey": object_key, "deleted": true }),
            );
        }
        BlobCommand::Ls { collection } => {
            let mut bookmark: Option<String> = None;
            loop {
                let page = client.blob_list(&collection, bookmark.as_deref()).await?;
                let items = page["blobs"]
                    .as_array()
                    .or(page["docs"].as_array())
                    .or(page["items"].as_array())
                    .cloned()
                    .unwrap_or_default();
                context.out.result(
                    || {
                        items
                            .iter()
                            .map(|b| {
                                format!(
                                    "{}\t{}\t{}",
                                    b["objectKey"].as_str().or(b["_id"].as_str()).unwrap_or("?"),
                                    b["size"],
                                    b["contentType"].as_str().unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    },
                    &page,
                );
                match page["bookmark"].as_str().filter(|b| !b.is_empty()) {
                    Some(next) if !items.is_empty() && bookmark.as_deref() != Some(next) => {
                        bookmark = Some(next.to_string())
                    }
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

async fn watch(
    context: &Context,
    collection: &str,
    since: Option<String>,
    count: Option<usize>,
    reconnect_for: u64,
) -> Result<()> {
    let client = context.acting()?;
    let since = since.map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)));
    let reconnect_for = Duration::from_secs(reconnect_for);
    let mut watch = Watch::new(&client, collection, since);
    let mut seen = 0usize;
    while count.is_none_or(|n| seen < n) {
        // Connection news always go to stderr as plain lines, so scripts (and the e2e
        // suite) know when events can flow and when the watch had to reconnect.
        match watch.next_signal(reconnect_for).await? {
            Signal::Subscribed { reconnects: 0, .. } => eprintln!("subscribed to {collection}"),
            Signal::Subscribed { reconnects, since } => eprintln!(
                "resubscribed to {collection} (reconnect {reconnects}, resuming after seq {})",
                since.map_or_else(|| "none".to_string(), |s| s.to_string())
            ),
            Signal::Disconnected { reason, retry_for } => eprintln!(
                "disconnected from {collection}: {reason}; reconnecting for up to {}s",
                retry_for.as_secs()
            ),
            Signal::Event(event) => {
                seen += 1;
                context.out.result(
                    || match &event {
                        Event::Update { data, seq, .. } => format!(
                            "update {} {} seq={seq}",
                            data["_id"].as_str().unwrap_or("?"),
                            data["_rev"].as_str().unwrap_or("?")
                        ),
                        Event::Delete { id, rev, seq, .. } => {
                            format!("delete {id} {rev} seq={seq}")
                        }
                    },
                    &event.to_json(),
                );
            }
        }
    }
    Ok(())
}

async fn sync(context: &Context, args: SyncArgs) -> Result<()> {
    let client = context.owner_or_app()?;
    if args.endpoint {
        return sync_endpoint(context, &client).await;
    }
    let folder = args
        .folder
        .expect("clap requires a folder without --endpoint");
    let report = FolderSync::new(&client, &folder, &args.collections)?
        .run()
        .await?;
    let value = serde_json::to_value(&report).expect("serializes");
    context.out.result(
        || {
            let mut lines = vec![format!(
                "pulled {}, pushed {}, deleted here {}, deleted there {}, conflicts {}, errors {}",
                report.pulled.len(),
                report.pushed.len(),
                report.deleted_locally.len(),
                report.deleted_remotely.len(),
                report.conflicts.len(),
                report.errors.len()
            )];
            lines.extend(report.conflicts.iter().map(|c| format!("conflict: {c}")));
            lines.extend(report.errors.iter().map(|e| format!("error: {e}")));
            lines.join("\n")
        },
        &value,
    );
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(ClientError::Usage(format!(
            "{} document(s) could not be synced",
            report.errors.len()
        )))
    }
}

/// `vibe sync --endpoint`: the replication URL and a bearer token a device can use on
/// its own. A replicator sends no `X-Vibe-App-ID`, so with `--app` the token is a fresh
/// app-bound one (never the owner's), and the endpoint is asked first, so a token it
/// refuses (an app without the `sync` grant) is an error here, not on the device.
async fn sync_endpoint(context: &Context, client: &Client) -> Result<()> {
    let (token, expires_at) = match (&context.app_token, &context.app) {
        (None, Some(app)) => {
            let minted = context.owner()?.app_token(app).await?;
            (minted.access_token, Some(minted.access_token_expires_in))
        }
        _ => {
            let token = client.access_token().await?;
            let expires_at = client
                .tokens()
                .current()
                .await
                .map(|t| t.access_token_expires_in);
            (token, expires_at)
        }
    };
    let device = Client::new(client.instance().clone(), TokenSource::fixed(token.clone()));
    let _: Value = device
        .send_json("GET /api/v1/sync/", |i| {
            i.request(reqwest::Method::GET, "api/v1/sync/")
        })
        .await?;
    let url = format!("{}/", client.instance().endpoint("api/v1/sync"));
    context.out.result(
        || format!("{url}\nAuthorization: Bearer {token}"),
        &json!({
            "url": url,
            "authorization": format!("Bearer {token}"),
            "expiresAt": expires_at,
        }),
    );
    Ok(())
}

async fn export(
    context: &Context,
    output: &std::path::Path,
    blobs: bool,
    encrypt: bool,
) -> Result<()> {
    let client = context.owner()?;
    let (bar, progress) = context.out.bar(None, "exporting");
    let summary = client
        .export_to_file(output, blobs, encrypt, Some(progress))
        .await;
    bar.finish_and_clear();
    let summary = summary?;
    context.out.result(
        || {
            format!(
                "exported {} bytes to {} (export {}, {})",
                summary.bytes,
                output.display(),
                summary.export_id,
                if encrypt {
                    "encrypted to your key"
                } else {
                    "NOT encrypted"
                }
            )
        },
        &json!({
            "file": output.display().to_string(),
            "exportId": summary.export_id,
            "bytes": summary.bytes,
            "encrypted": encrypt,
            "blobs": blobs,
        }),
    );
    Ok(())
}

async fn import(context: &Context, file: &std::path::Path) -> Result<()> {
    let key = context.key()?;
    let client = context.owner()?;
    let size = std::fs::metadata(file)
        .map_err(|e| ClientError::io(file, e))?
        .len();
    let (bar, progress) = context.out.bar(Some(size), "importing");
    let report = match crate::archive::plain_body(file, &key, Some(progress)).await {
        Ok((body, _)) => client.import_body(body).await,
        Err(e) => Err(e),
    };
    bar.finish_and_clear();
    let report = report?;
    let value = serde_json::to_value(&report).unwrap_or(Value::Null);
    context.out.result(|| import_summary(&report), &value);
    Ok(())
}

/// One line saying what an import brought in.
fn import_summary(report: &vibe_api::export::ImportReport) -> String {
    format!(
        "imported export {}: {} documents ({} revisions), {} apps, {} blobs ({} bytes){}",
        report.export_id,
        report.counts.documents,
        report.counts.revisions,
        report.counts.apps,
        report.counts.blobs,
        report.counts.blob_bytes,
        if report.repeated {
            " — it had been imported before; nothing changed"
        } else {
            ""
        }
    )
}

async fn restore(context: &Context) -> Result<()> {
    let key = context.key()?;
    let client = context.owner()?;
    let response = client.restore_archive().await?;
    let backup = response
        .headers()
        .get("x-vibe-backup-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(unnamed)")
        .to_string();
    let (bar, progress) = context.out.bar(response.content_length(), "restoring");
    let encrypted = futures::TryStreamExt::map_err(
        futures::TryStreamExt::inspect_ok(response.bytes_stream(), move |chunk| {
            progress(chunk.len() as u64)
        }),
        std::io::Error::other,
    );
    let report = match crate::archive::decrypted_stream_body(
        Box::pin(encrypted),
        &key,
        format!("the backup {backup}"),
    )
    .await
    {
        Ok(body) => client.import_body(body).await,
        Err(e) => Err(e),
    };
    bar.finish_and_clear();
    let report = report?;
    let mut value = serde_json::to_value(&report).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        fields.insert("backup".into(), Value::String(backup.clone()));
    }
    context.out.result(
        || format!("restored from backup {backup}\n{}", import_summary(&report)),
        &value,
    );
    Ok(())
}

/// `vibe restore --abandon`: asks (unless `yes`), then `POST /api/v1/restore/abandon`.
async fn abandon_restore(context: &Context, yes: bool) -> Result<()> {
    let client = context.owner()?;
    if !yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(ClientError::Usage(
                "abandoning a restore cannot be undone: confirm with --yes".into(),
            ));
        }
        eprint!(
            "Abandon the restore of {}? The backup will not be imported, and the instance \
             starts empty and takes writes. This cannot be undone. Type 'abandon' to confirm: ",
            client.instance().url()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| ClientError::Usage(format!("no confirmation read: {e}")))?;
        if answer.trim() != "abandon" {
            return Err(ClientError::Usage(
                "not confirmed: the restore is still pending".into(),
            ));
        }
    }
    let outcome = client.abandon_restore().await?;
    let value = serde_json::to_value(&outcome).unwrap_or(Value::Null);
    context.out.result(
        || {
            format!(
                "restore abandoned at {} (backup {} not imported); the instance takes writes",
                outcome.time, outcome.object_key
            )
        },
        &value,
    );
    Ok(())
}

/// What a person's devices must do after a migration.
fn device_steps(to: &str) -> Vec<String> {
    vec![
        format!(
            "Add each device again on the new instance (`vibe --instance {to} devices add NAME`) \
             and point it at the new sync URL with the new credential; it continues where it \
             stopped (every revision moved with its id, nothing is duplicated)."
        ),
        format!("Log your apps in again at {to}; their registrations and grants are there."),
        "When every device syncs with the new instance, ask the old provider to delete the \
         old one."
            .to_string(),
    ]
}

/// What a migration must carry over of `GET /api/v1/apps`: every app with its manifest and
/// grants, but not when each was last seen — that is the old instance's own observation (the
/// new one has seen nobody yet), and it differs as soon as an app or device was used.
fn carried_apps(list: Value) -> Result<vibe_api::apps::AppList> {
    let mut list: vibe_api::apps::AppList =
        serde_json::from_value(list).map_err(|e| ClientError::InvalidResponse {
            what: "GET /api/v1/apps".into(),
            problem: e.to_string(),
        })?;
    for app in &mut list.apps {
        app.last_seen_at = None;
    }
    list.apps.sort_by(|a, b| a.app_id.cmp(&b.app_id));
    Ok(list)
}

async fn migrate(context: &Context, to: &str) -> Result<()> {
    let key = context.key()?;
    let source = context.owner()?;
    let target_instance = Instance::new(to)?;
    if target_instance.url() == source.instance().url() {
        return Err(ClientError::Usage(
            "--to names the instance you are migrating from".into(),
        ));
    }
    store_login(context, &target_instance, &key).await?;
    let target = context.config.client(&target_instance)?;

    // Straight from one instance into the other through this machine, never on disk.
    let response = source.export_stream(true, false).await?;
    let (bar, progress) = context.out.bar(None, "migrating");
    let stream = futures::TryStreamExt::inspect_ok(response.bytes_stream(), move |chunk| {
        progress(chunk.len() as u64)
    });
    let report = target.import_body(reqwest::Body::wrap_stream(stream)).await;
    bar.finish_and_clear();
    let report = report?;

    // Verify: the new instance holds the apps and grants of the old one.
    let from_apps = carried_apps(source.list_apps().await?)?;
    let to_apps = carried_apps(target.list_apps().await?)?;
    if from_apps != to_apps {
        return Err(ClientError::InvalidResponse {
            what: "migration check".into(),
            problem: "the apps and grants on the new instance differ from the old one's".into(),
        });
    }
    let steps = device_steps(&target_instance.url());
    context.out.result(
        || {
            let mut text = format!(
                "migrated {} documents ({} revisions), {} apps, {} blobs ({} bytes) to {}\n\
                 Your devices must now:",
                report.counts.documents,
                report.counts.revisions,
                report.counts.apps,
                report.counts.blobs,
                report.counts.blob_bytes,
                target_instance.url()
            );
            for (i, step) in steps.iter().enumerate() {
                text.push_str(&format!("\n  {}. {step}", i + 1));
            }
            text
        },
        &json!({
            "from": source.instance().url(),
            "to": target_instance.url(),
            "exportId": report.export_id,
            "counts": report.counts,
            "verified": true,
            "devices": steps,
        }),
    );
    Ok(())
}
